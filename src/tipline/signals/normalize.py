"""Query-side normalisation: the picture inside borders, letterbox bars, caption bars
and screenshot frames, as crop boxes of the decoded pixels.

Hash-only banks hold the PDQ of the original picture; a re-shared copy with a border,
a caption or a window frame around it hashes far from it. :func:`normalize_boxes`
finds the boxes that remove those additions; each box is hashed as an extra PDQ
variant of the query (see :mod:`tipline.signals.pdq`), never of a bank entry.

* ``trim``: rows/columns from each edge whose pixels are (almost all) one colour -
  padding, letterbox and pillarbox bars, uniform frames (up to :data:`TRIM_RUNS`
  nested ones of different colours per edge).
* ``trim-even``: ``trim`` with opposite edges cut alike (the smaller cut): padding and
  letterbox bars come in equal pairs, and a picture's own flat edge beside a bar of
  its colour would otherwise be cut with it.
* ``uncaption``: a top or bottom band, up to :data:`MAX_CAPTION` of the height, whose
  rows are mostly one background colour with sparse text on it.
* ``trim+uncaption``: both, repeated up to :data:`ROUNDS` times (a screenshot's desktop,
  then its window frame and title bar); ``trim+uncaption-even`` with the left and right
  edges cut alike at each step.

Only boxes that differ meaningfully from the whole image, keep at least
:data:`MIN_AREA` of its area and differ from each other are returned. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

#: a pixel belongs to a bar when no channel differs from the bar's colour by more
#: (tight: a picture's own flat edge next to a bar of nearly its colour stays in)
TOLERANCE: Final = 8
#: share of a row/column's pixels of the bar's colour for it to be a uniform border
UNIFORM: Final = 0.97
#: share of a row's pixels of the background colour for it to belong to a caption band
CAPTION_BACKGROUND: Final = 0.5
#: share of a caption band's rows that are uniform (the rest carry its text)
CAPTION_UNIFORM_ROWS: Final = 0.5
#: largest caption band, as a share of the height
MAX_CAPTION: Final = 0.30
#: smallest caption band, as a share of the height
MIN_CAPTION: Final = 0.03
#: largest border trimmed from one edge, as a share of the side
MAX_BORDER: Final = 0.45
#: a box is returned only when it removes at least this share of a side on some edge
MIN_CUT: Final = 0.02
#: smallest share of the image's area a box keeps
MIN_AREA: Final = 0.40
#: pixels of a line read to decide whether it belongs to a bar (evenly spaced)
SAMPLES: Final = 256
#: runs of one colour after another that :func:`trim` cuts from one edge
TRIM_RUNS: Final = 3
#: trim/uncaption rounds for ``trim+uncaption``
ROUNDS: Final = 4
#: sides under this many pixels are never cut further
MIN_SIDE: Final = 16

#: names of the normalised variants a query can have (a bank's ``normalize`` switch
#: turns matching of exactly these on or off)
VARIANTS: Final = frozenset(
    {"trim", "trim-even", "uncaption", "trim+uncaption", "trim+uncaption-even"}
)


def is_normalized(variant: str | None) -> bool:
    """Whether ``variant`` names a normalised variant of a query (:data:`VARIANTS`)."""
    return variant in VARIANTS


class Box(NamedTuple):
    """Rows ``top:bottom`` and columns ``left:right`` of the pixels."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def area(self) -> int:
        """Pixels inside the box."""
        return max(0, self.bottom - self.top) * max(0, self.right - self.left)


def _near(lines: npt.NDArray[np.uint8], colour: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """Share of each line's pixels (``lines``: N x L x 3) within TOLERANCE of ``colour``,
    estimated on at most about SAMPLES pixels spread along each line."""
    step = max(1, lines.shape[1] // SAMPLES)
    diff = np.abs(lines[:, ::step].astype(np.int16) - colour).max(axis=2)
    return np.asarray((diff <= TOLERANCE).mean(axis=1), dtype=np.float64)


def _run(
    lines: npt.NDArray[np.uint8], colour: npt.NDArray[np.int16], threshold: float
) -> npt.NDArray[np.float64]:
    """:func:`_near` of the leading lines whose share is >= ``threshold`` (only those),
    read in doubling chunks so a picture's edge costs a few lines, not the image."""
    out: list[npt.NDArray[np.float64]] = []
    start, size = 0, 8
    while start < lines.shape[0]:
        near = _near(lines[start : start + size], colour)
        misses = np.flatnonzero(near < threshold)
        if misses.size:
            out.append(near[: misses[0]])
            break
        out.append(near)
        start += size
        size *= 2
    return np.concatenate(out) if out else np.zeros(0)


def _edge_lines(pixels: npt.NDArray[np.uint8], edge: str, depth: int) -> npt.NDArray[np.uint8]:
    """The ``depth`` outermost lines from ``edge``, outermost first, as N x L x 3."""
    if edge == "top":
        return pixels[:depth]
    if edge == "bottom":
        return pixels[::-1][:depth]
    if edge == "left":
        return pixels[:, :depth].transpose(1, 0, 2)
    return pixels[:, ::-1][:, :depth].transpose(1, 0, 2)


def _colour(line: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    return np.asarray(np.median(line, axis=0), dtype=np.int16)


def _cut(box: Box, edge: str, n: int) -> Box:
    if edge == "top":
        return box._replace(top=box.top + n)
    if edge == "bottom":
        return box._replace(bottom=box.bottom - n)
    if edge == "left":
        return box._replace(left=box.left + n)
    return box._replace(right=box.right - n)


def _view(pixels: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
    return pixels[box.top : box.bottom, box.left : box.right]


def trim(pixels: npt.NDArray[np.uint8], box: Box) -> Box:
    """``box`` without the uniform borders on each of its edges."""
    for edge in ("top", "bottom", "left", "right"):
        view = _view(pixels, box)
        h, w = view.shape[:2]
        side = h if edge in ("top", "bottom") else w
        if side < MIN_SIDE:
            continue
        lines = _edge_lines(view, edge, int(side * MAX_BORDER))
        cut = 0
        # nested frames (a desktop, a window's frame, the blended line between them):
        # each run of one colour, then the next, up to TRIM_RUNS of them
        for _ in range(TRIM_RUNS):
            if cut >= lines.shape[0]:
                break
            n = _run(lines[cut:], _colour(lines[cut]), UNIFORM).size
            if n == 0:
                break
            cut += n
        box = _cut(box, edge, cut)
    return box


def uncaption(pixels: npt.NDArray[np.uint8], box: Box) -> Box:
    """``box`` without a caption band at its top and/or bottom: rows from the edge that
    are mostly the edge's background colour (text on a plain bar), at least
    MIN_CAPTION and at most MAX_CAPTION of the height, at least CAPTION_UNIFORM_ROWS
    of them uniform."""
    for edge in ("top", "bottom"):
        view = _view(pixels, box)
        h = view.shape[0]
        if h < MIN_SIDE:
            continue
        lines = _edge_lines(view, edge, int(h * MAX_CAPTION) + 1)
        if lines.shape[0] == 0:
            continue
        near = _run(lines, _colour(lines[0]), CAPTION_BACKGROUND)
        n = near.size
        if not int(h * MIN_CAPTION) <= n <= int(h * MAX_CAPTION):
            continue
        # a plain bar with sparse text: mostly uniform rows (a natural sky is not)
        if (near >= UNIFORM).mean() >= CAPTION_UNIFORM_ROWS:
            box = _cut(box, edge, n)
    return box


def _even(box: Box, h: int, w: int) -> Box:
    """``box`` with each pair of opposite edges cut by the smaller of their two cuts:
    padding and letterbox bars come in equal pairs, and a picture whose own edge is
    as flat as the bar beside it made one of the pair look wider."""
    tb = min(box.top, h - box.bottom)
    lr = min(box.left, w - box.right)
    return Box(tb, h - tb, lr, w - lr)


class _Cuts:
    """:func:`trim` and :func:`uncaption` of one picture, each box worked out once."""

    def __init__(self, pixels: npt.NDArray[np.uint8]) -> None:
        self.pixels = pixels
        self._trim: dict[Box, Box] = {}
        self._uncaption: dict[Box, Box] = {}

    def trim(self, box: Box) -> Box:
        if box not in self._trim:
            self._trim[box] = trim(self.pixels, box)
        return self._trim[box]

    def uncaption(self, box: Box) -> Box:
        if box not in self._uncaption:
            self._uncaption[box] = uncaption(self.pixels, box)
        return self._uncaption[box]


def _frames(cuts: _Cuts, full: Box, *, even: bool) -> Box:
    """Caption bands and borders cut in turn, ROUNDS times at most (a screenshot's
    desktop, then its window's title bar and frame); with ``even``, each trim cuts
    the left and right edges alike (the smaller cut: a window's side frames match)."""
    box = full
    for _ in range(ROUNDS):
        # caption first: a trim stops at a text line, where a caption band starts
        inner = cuts.uncaption(box)
        step = cuts.trim(inner)
        if even:
            lr = min(step.left - inner.left, inner.right - step.right)
            step = step._replace(left=inner.left + lr, right=inner.right - lr)
        if step == box:
            break
        box = step
    return box


def normalize_boxes(pixels: npt.NDArray[np.uint8]) -> dict[str, Box]:
    """Named crop boxes of ``pixels`` (``H x W x 3`` uint8): ``trim``, ``trim-even``,
    ``uncaption``, ``trim+uncaption``, ``trim+uncaption-even``, each only when it cuts
    at least MIN_CUT of a side, keeps at least MIN_AREA of the area and differs from
    the boxes named before it."""
    h, w = pixels.shape[:2]
    full = Box(0, h, 0, w)
    if min(h, w) < MIN_SIDE:
        return {}
    cuts = _Cuts(_planes(pixels))
    trimmed = cuts.trim(full)
    candidates = {
        "trim": trimmed,
        "trim-even": _even(trimmed, h, w),
        "uncaption": cuts.uncaption(full),
        "trim+uncaption": _frames(cuts, full, even=False),
        "trim+uncaption-even": _frames(cuts, full, even=True),
    }
    out: dict[str, Box] = {}
    for name, box in candidates.items():
        if box.bottom - box.top < MIN_SIDE or box.right - box.left < MIN_SIDE:
            continue
        if box.area < MIN_AREA * full.area:
            continue
        shares = (box.top / h, (h - box.bottom) / h, box.left / w, (w - box.right) / w)
        if max(shares) < MIN_CUT or box in out.values():
            continue
        out[name] = box
    return out


def common_trim(frames: Sequence[npt.NDArray[np.uint8]]) -> Box | None:
    """The box without the bars every informative frame of a video shares (each edge
    cut by the least any frame allows), or None when no edge loses MIN_CUT of its side.

    ``frames``: ``H x W x 3`` RGB or ``H x W`` grey pixels of the same size. A frame
    whose trim keeps under MIN_AREA of it (a black or blank frame) tells nothing and is
    skipped; one frame whose picture reaches an edge keeps that edge uncut.
    """
    boxes: list[Box] = []
    for frame in frames:
        pixels = frame if frame.ndim == 3 else frame[:, :, None]
        h, w = pixels.shape[:2]
        if min(h, w) < MIN_SIDE:
            return None
        box = trim(pixels, Box(0, h, 0, w))
        if box.area >= MIN_AREA * h * w:
            boxes.append(box)
    if not boxes:
        return None
    h, w = frames[0].shape[:2]
    box = Box(
        min(b.top for b in boxes),
        max(b.bottom for b in boxes),
        min(b.left for b in boxes),
        max(b.right for b in boxes),
    )
    cuts = (box.top / h, (h - box.bottom) / h, box.left / w, (w - box.right) / w)
    return box if max(cuts) >= MIN_CUT else None


def _planes(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``pixels``, or its one plane (``H x W x 1``) when it repeats one plane three
    times (the fast decoder's luma of a JPEG): a third of the reading."""
    if pixels.ndim == 3 and pixels.strides[2] == 0:
        return pixels[:, :, :1]
    return pixels


def _crop(pixels: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
    """The box's pixels, contiguous; a repeated plane stays one plane (copied once,
    viewed three times), as the PDQ kernel reads it."""
    view = _view(pixels, box)
    if view.ndim == 3 and view.strides[2] == 0:
        plane = np.ascontiguousarray(view[:, :, 0])
        out: npt.NDArray[np.uint8] = np.lib.stride_tricks.as_strided(
            plane, shape=(*plane.shape, 3), strides=(*plane.strides, 0), writeable=False
        )
        return out
    return np.ascontiguousarray(view)


def crops(pixels: npt.NDArray[np.uint8]) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """``[(name, contiguous pixels of the box)]`` for :func:`normalize_boxes`."""
    return [(name, _crop(pixels, box)) for name, box in normalize_boxes(pixels).items()]
