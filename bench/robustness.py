"""Robustness benchmark: how often each matcher finds a benign picture again after the
edits re-sharing applies (crops, padding, captions, screenshots, flips, rotations, ...),
at ONE global decision rule per matcher, and how often it matches unrelated pictures.

Corpus (benign, installed by ``scripts/setup``): the wallpapers under
/usr/share/backgrounds are the "known" originals (bank entries); distractors are tiles
cut at random from OTHER wallpapers, so no distractor shares pixels with the original it
is compared with. Queries are every original under every transform below.

Contenders, in the same run, on the same files:

* ``pdq``: plain PDQ as python-threatexchange computes it (``PdqSignal.hash_from_file``);
  match when the Hamming distance to the original's PDQ is <= 31 (tipline's default).
* ``tipline``: ``tipline match`` as it is today (fast decode; the bank entry hashed with
  the reference decode, as ``tipline bank add`` does), distance <= 31; and
  ``tipline-dihedral``: the same with ``--dihedral`` (the 8 rotation/flip variants of
  the query, a match on any).
* ``tipline-exact``: the query hashed with the reference decode instead (the fast vs
  reference decode effect on recall).
* ``tipline-normalize``: ``tipline match --normalize``: the query also hashed without
  its uniform borders, letterbox, caption bars and screenshot frame
  (:mod:`tipline.signals.normalize`), a match on any variant.
* ``tipline-regions``: the bank-side tier: each bank entry (originals and distractor
  tiles alike) also holds the region descriptors ``tipline bank add`` stores for media
  (PDQ of crops up to 10% and rotations up to 5 degrees of the original,
  :mod:`tipline.signals.regions`); the query is hashed as ``tipline match`` does; a
  match is any query hash within 31 bits of any of the entry's hashes. Hashing every
  distractor's regions is slow, so only the first ``--region-distractors`` tiles are
  entries for this contender (its pair count is printed). ``tipline-robust``: the same
  bank with the query-side normalisation too (both tiers).
* ``sift`` (``--perception``): Thorn's ``perception`` local-descriptor deduplication
  (SIFT, ratio test, RANSAC), the strongest open anchor for crops, with its defaults.

Printed: recall per transform family for each contender, the false-match count over
the unrelated pairs compared (with their number), the time per query, and for the
region contenders the time to compute one entry's regions and the hashes compared; then
recall per transform of the "handled today" family, and how many of the queries plain
PDQ finds each contender finds too.

Usage: ``python bench/robustness.py [--distractors 2000] [--perception] [--misses DIR]``
(``--misses``: each contender's missed queries, listed and copied into ``DIR``)
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(BENCH_DIR))

THRESHOLD = 31
MIN_QUALITY = 50
Transform = Callable[[Image.Image, random.Random], Image.Image]


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def _crop(frac: float, where: str) -> Transform:
    def f(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        dw, dh = int(w * frac), int(h * frac)
        if where == "centre":
            return img.crop((dw // 2, dh // 2, w - dw // 2, h - dh // 2))
        return img.crop((dw, dh, w, h))  # off-centre: all of it from the top-left corner

    return f


def _pad(frac: float, letterbox: bool) -> Transform:
    def f(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        if letterbox:
            bar = int(h * frac / 2)
            canvas = Image.new("RGB", (w, h + 2 * bar), (0, 0, 0))
            canvas.paste(img, (0, bar))
            return canvas
        border = int(min(w, h) * frac / 2)
        color = (255, 255, 255) if rng.random() < 0.5 else (30, 30, 30)
        return ImageOps.expand(img, border=border, fill=color)

    return f


def _caption(where: str) -> Transform:
    def f(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        bar = int(h * 0.18)
        canvas = Image.new("RGB", (w, h + bar), (255, 255, 255))
        canvas.paste(img, (0, bar if where == "top" else 0))
        draw = ImageDraw.Draw(canvas)
        y = bar // 3 if where == "top" else h + bar // 3
        draw.text((w // 20, y), "when the benchmark finally runs " * 2, fill=(0, 0, 0))
        return canvas

    return f


def _rotate(deg: float) -> Transform:
    return lambda img, rng: img.rotate(deg, resample=Image.Resampling.BILINEAR, expand=False)


def _screenshot(phone: bool) -> Transform:
    def f(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        if phone:
            canvas = Image.new("RGB", (w + 40, h + 160), (10, 10, 10))
            canvas.paste(img, (20, 90))
            ImageDraw.Draw(canvas).text((30, 30), "12:34   5G   87%", fill=(255, 255, 255))
            return canvas
        canvas = Image.new("RGB", (w + 200, h + 200), (40, 90, 140))  # the desktop
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((90, 60, 90 + w + 20, 60 + h + 50), fill=(225, 225, 225))
        draw.text((110, 70), "photo.jpg - Image Viewer", fill=(0, 0, 0))
        canvas.paste(img, (100, 100))
        return canvas

    return f


def _logo(img: Image.Image, rng: random.Random) -> Image.Image:
    out = img.copy()
    w, h = out.size
    s = int(min(w, h) * 0.15)
    ImageDraw.Draw(out).ellipse((w - s - 10, 10, w - 10, 10 + s), fill=(200, 30, 30))
    return out


def _watermark(img: Image.Image, rng: random.Random) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for y in range(0, h, max(1, h // 6)):
        draw.text((w // 10, y), "sample watermark " * 4, fill=(255, 255, 255))
    return out


def _noise(img: Image.Image, rng: random.Random) -> Image.Image:
    a = np.asarray(img, dtype=np.int16)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 10, a.shape)
    return Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8))


def _gamma(img: Image.Image, rng: random.Random) -> Image.Image:
    lut = [round(255 * (i / 255) ** 0.7) for i in range(256)] * 3
    return img.point(lut)


def _combo(img: Image.Image, rng: random.Random) -> Image.Image:
    return _caption("bottom")(_crop(0.05, "centre")(img, rng), rng)


#: family -> transforms (name -> function); the families are the issue's targets
FAMILIES: dict[str, dict[str, Transform]] = {
    "handled today": {
        "jpeg q30": lambda i, r: _jpeg(i, 30),
        "jpeg q70": lambda i, r: _jpeg(i, 70),
        "resize 50%": lambda i, r: i.resize((i.width // 2, i.height // 2)),
        "thumbnail 160": lambda i, r: i.resize((160, max(1, 160 * i.height // i.width))),
        "blur": lambda i, r: i.filter(ImageFilter.GaussianBlur(2)),
        "noise": _noise,
        "brightness": lambda i, r: ImageEnhance.Brightness(i).enhance(1.3),
        "contrast": lambda i, r: ImageEnhance.Contrast(i).enhance(0.7),
        "gamma": _gamma,
        "watermark": _watermark,
        "corner logo": _logo,
    },
    "crop <= 10%": {
        "crop 5% centre": _crop(0.05, "centre"),
        "crop 10% centre": _crop(0.10, "centre"),
        "crop 5% corner": _crop(0.05, "corner"),
        "crop 10% corner": _crop(0.10, "corner"),
    },
    "crop 20%": {"crop 20% centre": _crop(0.20, "centre"), "crop 20% corner": _crop(0.2, "corner")},
    "padding/letterbox <= 20%": {
        "pad 10%": _pad(0.10, False),
        "pad 20%": _pad(0.20, False),
        "letterbox 10%": _pad(0.10, True),
        "letterbox 20%": _pad(0.20, True),
    },
    "caption bars": {"caption top": _caption("top"), "caption bottom": _caption("bottom")},
    "screenshot": {"window": _screenshot(False), "phone": _screenshot(True)},
    "rotation <= 5 deg": {"rotate 2": _rotate(2), "rotate 5": _rotate(5)},
    "rotation 10 deg": {"rotate 10": _rotate(10)},
    "mirror/flip": {
        "mirror": lambda i, r: ImageOps.mirror(i),
        "flip": lambda i, r: ImageOps.flip(i),
        "rotate 90": lambda i, r: i.transpose(Image.Transpose.ROTATE_90),
    },
    "crop 5% + caption": {"crop 5% + caption": _combo},
}


def _originals(limit: int) -> list[Image.Image]:
    from corpus import source_images

    out = []
    for path in source_images()[:limit]:
        with Image.open(path) as im:
            im.draft("RGB", (1400, 1400))
            img = im.convert("RGB")
        img.thumbnail((1024, 1024))
        out.append(img)
    if len(out) < 5:
        sys.exit("fewer than 5 wallpapers under /usr/share/backgrounds: run scripts/setup")
    return out


def _tiles(
    originals: list[Image.Image], count: int, rng: random.Random
) -> list[tuple[int, Image.Image]]:
    """(source index, tile): random crops of 20-60% of a side, resized to ~400 px."""
    out = []
    for k in range(count):
        src = k % len(originals)
        img = originals[src]
        w, h = img.size
        frac = rng.uniform(0.2, 0.6)
        tw, th = int(w * frac), int(h * frac)
        x, y = rng.randrange(0, w - tw), rng.randrange(0, h - th)
        tile = img.crop((x, y, x + tw, y + th))
        scale = 400 / max(tile.size)
        out.append((src, tile.resize((max(1, int(tw * scale)), max(1, int(th * scale))))))
    return out


def _quality(path: Path, hashers: Hashers) -> int:
    from tipline.signals.hashing import hash_bytes

    result = hash_bytes(path.read_bytes(), path.name, hashers.exact)
    return min((s.quality or 0) for s in result.signals if s.type == "pdq")


def _distinct(originals: list[Image.Image], tmp: Path, hashers: Hashers) -> list[Image.Image]:
    """Originals of PDQ quality >= 50 and at least 64 bits from every one kept before
    (wallpaper packages ship variations of one picture; those are not unrelated)."""
    kept: list[tuple[Image.Image, int]] = []
    for k, img in enumerate(originals):
        path = _save(img, tmp, f"candidate{k}")
        if _quality(path, hashers) < MIN_QUALITY:
            continue
        value = hashers.tipline(path, hashers.exact)[0]
        if all((value ^ other).bit_count() >= 64 for _, other in kept):
            kept.append((img, value))
    return [img for img, _ in kept]


def _save(img: Image.Image, folder: Path, name: str) -> Path:
    path = folder / f"{name}.jpg"
    img.convert("RGB").save(path, format="JPEG", quality=92)
    return path


def _near(variants: list[int], entry: int) -> bool:
    """True when any variant is within the threshold of ``entry`` (none: no hash)."""
    return any((v ^ entry).bit_count() <= THRESHOLD for v in variants)


class Hashers:
    """Each contender's hashing of a file (a list of 256-bit ints: its variants)."""

    def __init__(self) -> None:
        from tipline.signals.decode import DecodeMode
        from tipline.signals.hashing import HashOptions

        self.fast = HashOptions(signals=("pdq",))
        self.dihedral = HashOptions(signals=("pdq",), dihedral=True)
        self.exact = HashOptions(signals=("pdq",), decode=DecodeMode.EXACT)
        self.normalize = HashOptions(signals=("pdq",), normalize=True)

    def tipline(self, path: Path, options: object) -> list[int]:
        from tipline.signals.hashing import hash_bytes

        result = hash_bytes(path.read_bytes(), path.name, options)  # type: ignore[arg-type]
        return [int(s.value, 16) for s in result.signals if s.type == "pdq"]

    @staticmethod
    def pytx(path: Path) -> list[int]:
        from threatexchange.signal_type.pdq.signal import PdqSignal

        value = PdqSignal.hash_from_file(path)
        return [int(value, 16)] if value else []  # no hash below quality 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=30)
    parser.add_argument("--distractors", type=int, default=2000)
    parser.add_argument("--perception", action="store_true", help="also run Thorn's SIFT")
    parser.add_argument(
        "--region-distractors",
        type=int,
        default=300,
        help="distractor tiles whose regions are hashed for the region contenders",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--misses",
        type=Path,
        help="write each contender's missed queries (list and image files) to this folder",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    originals = _originals(args.originals)
    hashers = Hashers()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        originals = _distinct(originals, tmp, hashers)
        orig_paths = [_save(img, tmp, f"orig{i}") for i, img in enumerate(originals)]
        queries: list[tuple[int, str, str, Path]] = []  # (original, family, transform, path)
        for i, img in enumerate(originals):
            for family, transforms in FAMILIES.items():
                for name, fn in transforms.items():
                    out = fn(img, rng)
                    path = _save(out, tmp, f"q{i}-{name.replace(' ', '_').replace('%', 'pc')}")
                    queries.append((i, family, name, path))
        tiles = _tiles(originals, args.distractors, rng)
        tile_paths = [(src, _save(t, tmp, f"tile{k}")) for k, (src, t) in enumerate(tiles)]
        # a bank holds no flat, low-quality PDQ (publishing and HMA leave them out)
        tile_paths = [(src, p) for src, p in tile_paths if _quality(p, hashers) >= MIN_QUALITY]
        print(
            f"{len(originals)} originals, {len(queries)} queries "
            f"({sum(len(t) for t in FAMILIES.values())} transforms), {len(tiles)} distractor tiles"
        )
        # bank side: the reference PDQ of each original (what `tipline bank add` stores;
        # python-threatexchange hashes the same way)
        bank = [hashers.tipline(p, hashers.exact)[0] for p in orig_paths]
        distractor_bank = [(src, hashers.tipline(p, hashers.exact)[0]) for src, p in tile_paths]
        contenders: dict[str, Callable[[Path], list[int]]] = {
            "pdq": Hashers.pytx,
            "tipline": lambda p: hashers.tipline(p, hashers.fast),
            "tipline-dihedral": lambda p: hashers.tipline(p, hashers.dihedral),
            "tipline-exact": lambda p: hashers.tipline(p, hashers.exact),
            "tipline-normalize": lambda p: hashers.tipline(p, hashers.normalize),
        }
        for warm in contenders.values():  # same warm-up for every contender
            warm(orig_paths[0])
        results: dict[str, dict[str, list[bool]]] = {}
        false: dict[str, int] = {}
        pairs = 0
        seconds: dict[str, float] = {}
        for name, fn in contenders.items():
            started = time.perf_counter()
            hashed = [fn(path) for _, _, _, path in queries]
            seconds[name] = (time.perf_counter() - started) / len(queries)
            per: dict[str, list[bool]] = {}
            fm = 0
            pairs = 0
            for (i, family, _, _), variants in zip(queries, hashed, strict=True):
                per.setdefault(family, []).append(_near(variants, bank[i]))
                for j, other in enumerate(bank):
                    if j != i:
                        pairs += 1
                        fm += _near(variants, other)
                for src, other in distractor_bank:
                    if src != i:
                        pairs += 1
                        fm += _near(variants, other)
            results[name] = per
            false[name] = fm
        _regions(
            queries,
            orig_paths,
            tile_paths[: args.region_distractors],
            {"tipline-regions": hashers.fast, "tipline-robust": hashers.normalize},
            hashers,
            results,
            false,
            seconds,
        )
        if args.perception:
            _sift(queries, orig_paths, tile_paths, results, false, seconds)
        if args.misses:
            _write_misses(args.misses, queries, results)
        names = list(results)
        print(f"\nrecall at one global rule (PDQ: distance <= {THRESHOLD}; SIFT: its defaults)")
        print(f"{'family':28}" + "".join(f"{n:>18}" for n in names))
        for family in FAMILIES:
            row = "".join(
                f"{100 * sum(results[n][family]) / len(results[n][family]):17.1f}%" for n in names
            )
            print(f"{family:28}{row}")
        print(f"\n{'false matches':28}" + "".join(f"{false[n]:>18,}" for n in names))
        print(
            f"{'unrelated pairs':28}"
            + "".join(f"{false.get(n + ' pairs', pairs):>18,}" for n in names)
        )
        print(f"{'ms per query':28}" + "".join(f"{1000 * seconds[n]:18.1f}" for n in names))
        _print_handled(queries, results, names)


def _by_transform(
    queries: list[tuple[int, str, str, Path]], per: dict[str, list[bool]]
) -> dict[tuple[str, str], list[bool]]:
    """(family, transform) -> one contender's hit per query, in query order."""
    seen: dict[str, int] = {}
    out: dict[tuple[str, str], list[bool]] = {}
    for _, family, transform, _ in queries:
        k = seen.get(family, 0)
        seen[family] = k + 1
        out.setdefault((family, transform), []).append(per[family][k])
    return out


def _print_handled(
    queries: list[tuple[int, str, str, Path]],
    results: dict[str, dict[str, list[bool]]],
    names: list[str],
) -> None:
    """Recall per transform of the "handled today" family, and how many of the queries
    plain PDQ (python-threatexchange) finds each contender finds too: robust matching
    must not lose what PDQ already handles."""
    split = {n: _by_transform(queries, results[n]) for n in names}
    print()
    print(f"{'handled today, per transform':28}" + "".join(f"{n:>18}" for n in names))
    for family, transform in split[names[0]]:
        if family != "handled today":
            continue
        hits = [split[n][(family, transform)] for n in names]
        print(f"  {transform:26}" + "".join(f"{100 * sum(h) / len(h):17.1f}%" for h in hits))
    if "pdq" not in results:
        return
    found = [hit for hits in split["pdq"].values() for hit in hits]
    kept = []
    for n in names:
        theirs = [hit for hits in split[n].values() for hit in hits]
        both = sum(a and b for a, b in zip(found, theirs, strict=True))
        kept.append(f"{both}/{sum(found)}")
    print(f"{'plain PDQ matches kept':28}" + "".join(f"{k:>18}" for k in kept))


def _write_misses(
    folder: Path,
    queries: list[tuple[int, str, str, Path]],
    results: dict[str, dict[str, list[bool]]],
) -> None:
    """``folder/<contender>.txt``: one line per missed query (original, family,
    transform, file), and the missed query files under ``folder/<contender>/``."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name, per in results.items():
        seen: dict[str, int] = {}
        lines = []
        for i, family, transform, path in queries:
            k = seen.get(family, 0)
            seen[family] = k + 1
            if per[family][k]:
                continue
            lines.append(f"{i}\t{family}\t{transform}\t{path.name}")
            (folder / name).mkdir(exist_ok=True)
            shutil.copy(path, folder / name / path.name)
        (folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    print(f"missed queries written to {folder}")


def _words(values: list[int]) -> np.ndarray:
    """256-bit ints as an (n, 4) uint64 array."""
    raw = b"".join(v.to_bytes(32, "big") for v in values)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(values), 4)


def _regions(
    queries: list[tuple[int, str, str, Path]],
    orig_paths: list[Path],
    tile_paths: list[tuple[int, Path]],
    contenders: dict[str, object],
    hashers: Hashers,
    results: dict[str, dict[str, list[bool]]],
    false: dict[str, int],
    seconds: dict[str, float],
) -> None:
    """The bank-side tier: every entry's reference PDQ plus its region descriptors."""
    from tipline.services.regions.descriptors import media_regions

    owners: list[int] = []  # hash row -> entry number
    sources: list[int] = []  # entry number -> original it was cut from (itself for originals)
    values: list[int] = []
    started = time.perf_counter()
    entries = [(i, p) for i, p in enumerate(orig_paths)] + list(tile_paths)
    for n, (src, path) in enumerate(entries):
        hashes = [hashers.tipline(path, hashers.exact)[0]]
        hashes += [int(v, 16) for _, v in media_regions(path.read_bytes())]
        owners += [n] * len(hashes)
        sources.append(src)
        values += hashes
    per_entry = (time.perf_counter() - started) / len(entries)
    bank = _words(values)
    owner = np.asarray(owners)
    source = np.asarray(sources)
    n_orig = len(orig_paths)
    for name, options in contenders.items():
        started = time.perf_counter()
        per: dict[str, list[bool]] = {}
        fm = pairs = 0
        for i, family, _, path in queries:
            variants = hashers.tipline(path, options)
            hit = np.zeros(len(entries), dtype=bool)
            for v in variants:
                d = np.bitwise_count(bank ^ _words([v])).sum(axis=1)
                hit[owner[d <= THRESHOLD]] = True
            per.setdefault(family, []).append(bool(hit[i]))
            unrelated = source != i
            unrelated[:n_orig] = np.arange(n_orig) != i
            pairs += int(unrelated.sum())
            fm += int((hit & unrelated).sum())
        seconds[name] = (time.perf_counter() - started) / len(queries)
        results[name] = per
        false[name] = fm
        false[name + " pairs"] = pairs
    print(
        f"region contenders: {len(entries)} entries, {len(values):,} hashes "
        f"({len(values) / len(entries):.0f} per entry), {1000 * per_entry:.0f} ms per entry "
        "to hash its regions"
    )


def _sift(
    queries: list[tuple[int, str, str, Path]],
    orig_paths: list[Path],
    tile_paths: list[tuple[int, Path]],
    results: dict[str, dict[str, list[bool]]],
    false: dict[str, int],
    seconds: dict[str, float],
) -> None:
    """perception's SIFT deduplication of the queries against originals + distractors."""
    try:
        from perception import local_descriptor_deduplication as ldd
    except ImportError:
        sys.exit(
            "--perception needs Thorn's perception: pip install "
            "'perception[approximate-deduplication]' (it pins rich<14, so keep it out of "
            "tipline's own environment: use a separate venv with tipline installed)"
        )

    reference = [str(p) for p in orig_paths] + [str(p) for _, p in tile_paths]
    source = {str(p): i for i, p in enumerate(orig_paths)}
    source.update({str(p): src for src, p in tile_paths})
    started = time.perf_counter()
    found = ldd.deduplicate(reference, [str(q[3]) for q in queries])
    seconds["sift"] = (time.perf_counter() - started) / len(queries)
    query_of = {str(q[3]): q for q in queries}
    hits: set[tuple[str, str]] = set()
    for a, b, *_ in found:
        q, r = (a, b) if a in query_of else (b, a)
        if q in query_of:
            hits.add((q, r))
    per: dict[str, list[bool]] = {}
    fm = 0
    for q in queries:
        path = str(q[3])
        matched = {r for qq, r in hits if qq == path}
        per.setdefault(q[1], []).append(str(orig_paths[q[0]]) in matched)
        fm += sum(1 for r in matched if source[r] != q[0])
    results["sift"] = per
    false["sift"] = fm
    false["sift pairs"] = sum(1 for q in queries for r in reference if source[r] != q[0])


if __name__ == "__main__":
    main()
