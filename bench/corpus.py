"""Build a benign benchmark corpus from Debian wallpaper packages.

Every picture under the wallpaper folders (``mate-backgrounds``, ``lomiri-wallpapers``,
``plasma-workspace-wallpapers`` when installed) is re-encoded as a baseline JPEG of a
given size in megapixels into ``bench/.corpus/<N>mp/`` (gitignored). Files already
there are reused, so every benchmark can call :func:`build_corpus` cheaply.

Usage: ``python bench/corpus.py --megapixels 3 12 [--limit N]``
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

#: Folders searched for source wallpapers (missing ones are skipped).
SOURCE_DIRS: tuple[Path, ...] = (
    Path("/usr/share/backgrounds"),
    Path("/usr/share/wallpapers"),
)
CORPUS_DIR = Path(__file__).resolve().parent / ".corpus"
_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
#: JPEG quality of the re-encoded files (typical camera/phone output).
JPEG_QUALITY = 90


def source_images(dirs: Sequence[Path] = SOURCE_DIRS) -> list[Path]:
    """Wallpaper files found under ``dirs``, sorted, de-duplicated by file name."""
    seen: dict[str, Path] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in _SUFFIXES and path.is_file():
                seen.setdefault(path.stem, path)
    return [seen[name] for name in sorted(seen)]


def _target_size(width: int, height: int, megapixels: float) -> tuple[int, int]:
    scale = math.sqrt(megapixels * 1_000_000 / (width * height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def build_corpus(
    megapixels: float, *, limit: int | None = None, out_dir: Path = CORPUS_DIR
) -> list[Path]:
    """JPEG files of about ``megapixels`` million pixels each (created on first use).

    ``limit`` caps the number of files (first N sources by name). Raises
    ``FileNotFoundError`` when no wallpaper package is installed.
    """
    sources = source_images()
    if not sources:
        raise FileNotFoundError(
            "no wallpapers found; install mate-backgrounds or lomiri-wallpapers (apt-get)"
        )
    if limit is not None:
        sources = sources[:limit]
    folder = out_dir / f"{megapixels:g}mp"
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for src in sources:
        dest = folder / f"{src.stem}.jpg"
        if not dest.exists():
            with Image.open(src) as im:
                rgb = im.convert("RGB")
            rgb = rgb.resize(_target_size(*rgb.size, megapixels), Image.Resampling.LANCZOS)
            tmp = dest.with_suffix(".tmp")
            rgb.save(tmp, "JPEG", quality=JPEG_QUALITY)
            tmp.replace(dest)
        paths.append(dest)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: build the corpus for each size and print where it is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[3.0, 12.0])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    for mp in args.megapixels:
        paths = build_corpus(mp, limit=args.limit)
        total = sum(p.stat().st_size for p in paths)
        print(f"{mp:g} MP: {len(paths)} files, {total / 1e6:.1f} MB in {paths[0].parent}")


if __name__ == "__main__":
    main()
