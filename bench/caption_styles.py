"""Caption and screenshot styles the robustness benchmark does not use (held out from
the tuning of :mod:`tipline.signals.normalize`): query-side recall of the current
normalisation against the one of an earlier commit, same queries, same rule.

The wallpapers of ``bench/robustness.py`` (same quality and distinctness filters) are
the originals; each gets every style below; a query matches when any of its PDQs
(fast decode: as given and each normalised variant) is within 31 bits of the
original's reference PDQ. The earlier normalisation is read from ``git show
REV:src/tipline/signals/normalize.py`` and swapped in for its run.

Usage: ``python bench/caption_styles.py [--originals 30] [--rev e304df1]``
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
sys.path.insert(0, str(BENCH_DIR))

import robustness as rb  # noqa: E402

Style = Callable[[Image.Image, random.Random], Image.Image]


def caption(where: str, share: float, bg: tuple[int, int, int], ink: tuple[int, int, int]) -> Style:
    """A bar of ``share`` of the picture's height with a line of text, above, below or
    both (a meme)."""

    def f(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        bar = int(h * share)
        above, below = where in ("top", "both"), where in ("bottom", "both")
        canvas = Image.new("RGB", (w, h + bar * (above + below)), bg)
        top = bar if above else 0
        canvas.paste(img, (0, top))
        draw = ImageDraw.Draw(canvas)
        if above:
            draw.text((w // 20, bar // 3), "WHEN THE BENCH RUNS " * 2, fill=ink)
        if below:
            draw.text((w // 20, top + h + bar // 3), "and nothing matches " * 2, fill=ink)
        return canvas

    return f


def window(
    frame: tuple[int, int, int], desktop: tuple[int, int, int], title: int = 40, border: int = 10
) -> Style:
    """The picture in a window (title bar with text, side frames) on a desktop."""

    def f(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        canvas = Image.new("RGB", (w + 200, h + 200), desktop)
        draw = ImageDraw.Draw(canvas)
        x0, y0 = 100 - border, 100 - title
        draw.rectangle((x0, y0, 100 + w + border - 1, 100 + h + border - 1), fill=frame)
        draw.text((x0 + 20, y0 + 10), "photo.jpg - Viewer", fill=(255 - frame[0],) * 3)
        canvas.paste(img, (100, 100))
        return canvas

    return f


STYLES: dict[str, Style] = {
    "black bar, white text, top 12%": caption("top", 0.12, (0, 0, 0), (255, 255, 255)),
    "grey bar, bottom 8%": caption("bottom", 0.08, (128, 128, 128), (255, 255, 255)),
    "yellow bar, top 25%": caption("top", 0.25, (250, 220, 40), (0, 0, 0)),
    "meme: white bars top and bottom 15%": caption("both", 0.15, (255, 255, 255), (0, 0, 0)),
    "dark window on a white desktop": window((45, 45, 48), (250, 250, 250)),
    "white window, 4 px frame, grey desktop": window((255, 255, 255), (128, 128, 128), 30, 4),
}


def _module_at(rev: str, folder: Path) -> object:
    source = subprocess.run(
        ["git", "show", f"{rev}:src/tipline/signals/normalize.py"],
        cwd=BENCH_DIR.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / "normalize_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("normalize_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=30)
    parser.add_argument("--rev", default="e304df1", help="the earlier normalisation's commit")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    import tipline.signals.normalize as current

    hashers = rb.Hashers()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        earlier = _module_at(args.rev, tmp)
        versions = {args.rev: earlier.crops, "now": current.crops}  # type: ignore[attr-defined]
        originals = rb._distinct(rb._originals(args.originals), tmp, hashers)
        found: dict[tuple[str, str], list[bool]] = {}
        for i, img in enumerate(originals):
            ref = hashers.tipline(rb._save(img, tmp, f"o{i}"), hashers.exact)[0]
            for name, style in STYLES.items():
                path = rb._save(style(img, rng), tmp, f"q{i}")
                for label, crops in versions.items():
                    current.crops = crops  # what the PDQ signal type calls
                    variants = hashers.tipline(path, hashers.normalize)
                    found.setdefault((name, label), []).append(rb._near(variants, ref))
        current.crops = versions["now"]
    print(f"{len(originals)} originals; recall at PDQ distance <= {rb.THRESHOLD}")
    print(f"{'style':42}" + "".join(f"{label:>10}" for label in versions))
    for name in STYLES:
        row = "".join(
            f"{100 * sum(found[(name, v)]) / len(found[(name, v)]):9.1f}%" for v in versions
        )
        print(f"{name:42}{row}")


if __name__ == "__main__":
    main()
