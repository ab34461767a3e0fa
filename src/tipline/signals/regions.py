"""Bank-side region descriptors: PDQ hashes of crops and small rotations of an original.

A re-shared copy cropped by a few percent, or turned by a few degrees, hashes far from
the original's PDQ (PDQ keeps a crop within its threshold only up to about 1% of a side
per edge). For an original whose pixels the bank holds (media added with
``tipline bank add NAME FILE``, the API's media route), :func:`region_hashes` stores
the PDQ of each region a crop or rotation could leave, so the query's PDQ, as given or
normalised, lands within the threshold of one of them:

* ``crop``: every box removing ``a`` and ``b`` (multiples of :attr:`RegionGrid.step`)
  from the left and right, and ``c`` and ``d`` from the top and bottom, with ``a + b``
  and ``c + d`` at most :attr:`RegionGrid.max_crop` of the side (centred, corner and
  one-sided crops alike); named ``crop:l2t0r4b0`` (percent of the side per edge);
* ``rotate``: the picture turned by each of :attr:`RegionGrid.angles` degrees about its
  centre, same size, corners filled black (what a tilted re-share keeps); named
  ``rotate:-3``.

Hashes under the PDQ quality floor and duplicates are left out. Pure: pixels in,
``(name, hex)`` out; the grid is passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, cast

import numpy as np
import numpy.typing as npt
from PIL import Image

from tipline.signals import pdq_fast
from tipline.signals.pdq import LOW_QUALITY_THRESHOLD

#: Pictures are hashed at most this many pixels on the long side (PDQ samples 64 x 64;
#: a smaller copy changes a hash by a few bits and makes the grid cheap).
WORK_SIDE: Final = 512
#: Pictures with a shorter side give no regions (a crop of a few pixels means nothing).
MIN_SIDE: Final = 128


@dataclass(frozen=True, slots=True)
class RegionGrid:
    """Which regions of an original are hashed."""

    #: crop step per edge, as a share of the side
    step: float = 0.02
    #: largest crop per dimension (left + right, top + bottom), as a share of the side
    max_crop: float = 0.10
    #: rotations, in degrees (counter-clockwise positive)
    angles: tuple[float, ...] = (-5.0, -4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0, 5.0)

    def cuts(self) -> list[tuple[int, int]]:
        """``(start, end)`` cuts of one dimension, in half grid steps: every pair of
        whole steps within :attr:`max_crop`, and the symmetric (centred) cuts at every
        half step, since centred crops (zooms) are the commonest and a zoom's error
        adds up on both edges."""
        steps = round(self.max_crop / self.step) if self.step > 0 else 0
        grid = [(2 * a, 2 * b) for a in range(steps + 1) for b in range(steps + 1 - a)]
        centred = [(k, k) for k in range(1, steps + 1, 2)]
        return sorted({*grid, *centred})

    def size(self) -> int:
        """How many regions the grid names (before quality and duplicate filtering)."""
        return len(self.cuts()) ** 2 - 1 + len(self.angles)


DEFAULT_GRID: Final = RegionGrid()


def _work_copy(pixels: npt.NDArray[np.uint8]) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(pixels[..., :3]))
    scale = WORK_SIDE / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img


def regions(
    pixels: npt.NDArray[np.uint8], grid: RegionGrid = DEFAULT_GRID
) -> Iterator[tuple[str, npt.NDArray[np.float32]]]:
    """``(name, PDQ luma)`` of every region of the grid (see the module docstring): the
    work copy's float32 luma, cropped or turned."""
    img = _work_copy(pixels)
    luma = pdq_fast.rgb_to_luma(np.asarray(img))
    h, w = luma.shape
    half = grid.step / 2
    for top, bottom in grid.cuts():
        for left, right in grid.cuts():
            if top == bottom == left == right == 0:
                continue
            y0, y1 = round(h * half * top), h - round(h * half * bottom)
            x0, x1 = round(w * half * left), w - round(w * half * right)
            pct = [f"{100 * half * n:g}" for n in (left, top, right, bottom)]
            yield "crop:l{}t{}r{}b{}".format(*pct), np.ascontiguousarray(luma[y0:y1, x0:x1])
    for angle in grid.angles:
        turned = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
        yield f"rotate:{angle:g}", pdq_fast.rgb_to_luma(np.asarray(turned))


def region_hashes(
    pixels: npt.NDArray[np.uint8], grid: RegionGrid = DEFAULT_GRID
) -> list[tuple[str, str]]:
    """``(region name, PDQ hex)`` of the grid's regions of ``pixels`` (``H x W x 3``
    uint8); low-quality and repeated hashes are left out, and so are regions whose DCT
    coefficients tie at the median (flat or periodic pictures, where float rounding
    decides the bits: :func:`tipline.signals.pdq_fast.ties_at_median`).

    All the regions' 64 x 64 samples go through one batched DCT
    (:mod:`tipline.signals.pdq_fast`)."""
    if min(pixels.shape[:2]) < MIN_SIDE:
        return []
    names: list[str] = []
    samples: list[npt.NDArray[np.float32]] = []
    for name, luma in regions(pixels, grid):
        names.append(name)
        samples.append(pdq_fast.sample64(cast("npt.NDArray[np.uint8]", luma)).copy())
    stacked = np.stack(samples)
    hashes, qualities = pdq_fast.pdq_from_64x64(stacked)
    any_tie = pdq_fast.ties_at_median(stacked)  # one check for the batch, rows if any
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for k, name in enumerate(names):
        value = hashes[k].hex()
        if qualities[k] < LOW_QUALITY_THRESHOLD or value in seen:
            continue
        if any_tie and pdq_fast.ties_at_median(stacked[k : k + 1]):
            continue
        seen.add(value)
        out.append((name, value))
    return out
