"""Benign media for ``tipline simulate``: distinct pictures (quadrants of the installed
wallpapers and seeded generated drawings), their re-shared variants (resize, crop, JPEG
re-encode) and short videos made from them with ffmpeg.

Everything here is a pure function of its arguments: the same source and transform
give the same bytes (JPEG with fixed settings; ffmpeg single-threaded with bit-exact
flags), so a simulation is reproduced from its seed.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tipline.errors import InputError, MissingExtraError
from tipline.signals.pdq import pdq_hash_fast

#: wallpaper files used as picture sources
WALLPAPER_SUFFIXES = (".jpg", ".jpeg", ".png")
#: longest side of a wallpaper kept in memory, pixels (decoding cost stays bounded)
_WALLPAPER_SIDE = 6000


@dataclass(frozen=True, slots=True)
class Source:
    """One distinct picture: a wallpaper quadrant (``quadrant`` 0-3) or a drawing."""

    wallpaper: str | None = None  # path of the wallpaper file
    quadrant: int = 0
    seed: int = 0  # drawing seed when ``wallpaper`` is None

    def label(self) -> str:
        """``wallpaper:<name>#q<k>`` or ``generated:<seed>``."""
        if self.wallpaper is not None:
            return f"wallpaper:{Path(self.wallpaper).name}#q{self.quadrant}"
        return f"generated:{self.seed}"


@dataclass(frozen=True, slots=True)
class Transform:
    """How a re-shared copy differs from the item's original."""

    #: the original's bytes unchanged (an exact duplicate)
    exact: bool = True
    #: size relative to the original (0 < scale <= 1)
    scale: float = 1.0
    #: fraction cut from each side: left, top, right, bottom
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    #: JPEG quality of a photo; a video's quality maps to its x264 CRF
    quality: int = 90

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "exact": self.exact,
            "scale": self.scale,
            "crop": list(self.crop),
            "quality": self.quality,
        }


def wallpapers(folder: Path | None) -> list[Path]:
    """Wallpaper files under ``folder`` (sorted, so the order is the same everywhere)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in WALLPAPER_SUFFIXES
    )


@lru_cache(maxsize=64)
def _wallpaper(path: str, side: int) -> Image.Image:
    """The wallpaper at ``path``, longest side at most ``side`` pixels (decoded once)."""
    with Image.open(path) as img:
        img.draft("RGB", (side, side))
        rgb = img.convert("RGB")
    rgb.thumbnail((side, side))
    return rgb


def _drawing(seed: int, side: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = side, int(side * rng.uniform(0.6, 1.0))
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 16))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse((x0, y0, x1 + 4, y1 + 4), fill=fill)
        elif shape == 1:
            draw.rectangle((x0, y0, x1 + 4, y1 + 4), fill=fill)
        else:
            points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(points, fill=fill)
    return img


def original(source: Source, side: int, *, upscale: bool = False) -> Image.Image:
    """The item's original picture, longest side at most ``side`` pixels (RGB); exactly
    ``side`` with ``upscale`` (a smaller wallpaper quadrant is enlarged)."""
    if source.wallpaper is None:
        return _drawing(source.seed, side)
    full = _wallpaper(source.wallpaper, min(_WALLPAPER_SIDE, 2 * side))
    w, h = full.size
    left, top = (source.quadrant % 2) * w // 2, (source.quadrant // 2) * h // 2
    part = full.crop((left, top, left + w // 2, top + h // 2))
    if upscale and max(part.size) < side:
        scale = side / max(part.size)
        size = (max(1, round(part.width * scale)), max(1, round(part.height * scale)))
        return part.resize(size, Image.Resampling.LANCZOS)
    part.thumbnail((side, side))
    return part


def pdq_of(img: Image.Image) -> tuple[bytes, int]:
    """PDQ (32 bytes) and quality of a picture (the numba kernel: planning a stream of
    2 MP photos checks hundreds of candidates)."""
    value, quality = pdq_hash_fast(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return bytes.fromhex(value), quality


def _transformed(img: Image.Image, transform: Transform) -> Image.Image:
    if transform.exact:
        return img
    w, h = img.size
    left, top, right, bottom = transform.crop
    box = (
        round(w * left),
        round(h * top),
        max(round(w * left) + 8, round(w * (1 - right))),
        max(round(h * top) + 8, round(h * (1 - bottom))),
    )
    cut = img.crop(box)
    size = (max(8, round(cut.width * transform.scale)), max(8, round(cut.height * transform.scale)))
    return cut.resize(size, Image.Resampling.LANCZOS)


def photo(img: Image.Image, transform: Transform) -> bytes:
    """A JPEG of the transformed picture (quality 90 for the exact original)."""
    out = io.BytesIO()
    quality = 90 if transform.exact else transform.quality
    _transformed(img, transform).save(out, "JPEG", quality=quality, optimize=False)
    return out.getvalue()


def video(img: Image.Image, transform: Transform, *, seconds: float, side: int) -> bytes:
    """A short H.264 MP4 panning across the transformed picture (``side`` pixels wide,
    4 frames per second); the same arguments give the same bytes."""
    ffmpeg = _ffmpeg()
    frame = _transformed(img, transform)
    scale = side / max(frame.width, 1)
    width = max(16, int(frame.width * scale) // 2 * 2)
    height = max(16, int(frame.height * scale) // 2 * 2)
    crf = 23 if transform.exact else int(18 + (100 - transform.quality) / 3)
    with tempfile.TemporaryDirectory(prefix="tipline-sim-") as tmp:
        still = Path(tmp) / "still.png"
        out = Path(tmp) / "clip.mp4"
        frame.resize((width + width // 8 // 2 * 2, height), Image.Resampling.LANCZOS).save(still)
        # the picture pans left to right: frames differ, as in a real clip
        pan = f"crop={width}:{height}:'(in_w-out_w)*t/{seconds:g}':0,format=yuv420p"
        command = [
            ffmpeg, "-v", "error", "-y", "-threads", "1",
            "-loop", "1", "-framerate", "4", "-i", str(still),
            "-t", f"{seconds:g}", "-vf", pan,
            "-c:v", "libx264", "-threads", "1", "-preset", "veryfast", "-crf", str(crf),
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
            "-movflags", "+faststart", "-f", "mp4", str(out),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise InputError(f"ffmpeg could not make a video: {' '.join(message)}")
        return out.read_bytes()


def _ffmpeg() -> str:
    import shutil

    found = shutil.which("ffmpeg")
    if found is None:
        raise MissingExtraError("ffmpeg not found on PATH; simulated videos need FFmpeg")
    return found


def file_digests(data: bytes) -> tuple[str, str]:
    """The two digests a report carries for a file: MD5 and SHA-1 (hex)."""
    return hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()


def digest(data: bytes) -> dict[str, str]:
    """MD5, SHA-1 and SHA-256 (hex) of ``data``."""
    md5, sha1 = file_digests(data)
    return {"md5": md5, "sha1": sha1, "sha256": hashlib.sha256(data).hexdigest()}
