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
* ``frame``: ``trim+uncaption`` for pictures whose own edge has the colour of the bar
  or frame beside it, where the cuts above stop at the wrong line: only borders that
  are flat and end sharply are trimmed (:func:`trim_sharp`: a step in the lines' level
  ends a window frame beside a picture edge of nearly its colour; a picture's own flat
  edge drifts or fades out and is kept), and a caption band is cut at the farthest
  row where its uniform rows give way to the picture (:func:`uncaption_sharp`: a
  white bar over a picture whose top is mostly white).

Only boxes that differ meaningfully from the whole image, keep at least
:data:`MIN_AREA` of its area and differ from each other are returned. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
#: ``frame``: a border's lines keep their level (median) within this many levels of its first
#: line's, and a line whose level jumps by as much from the line before ends it (a window
#: frame beside a picture edge of nearly its colour: within TOLERANCE, yet a step no
#: smooth picture makes from one line to the next)
STEP: Final = 3.0
#: ``frame``: a run is cut only when the first line after it keeps under this share of
#: the run's colour (or a STEP ends it): a picture's own flat edge fades out gradually
SHARP_AFTER: Final = 0.8
#: ``frame``: lines after a border that a lossy codec may have blurred into it
BLUR_LINES: Final = 3
#: ``frame``: a caption band ends where a uniform row is followed by a row at least
#: this share of pixels further from the band's colour
SHARP_DROP: Final = 0.1
#: ``frame``: runs of one colour after another its trim may cut from one edge (each must
#: end sharply, so more of them are safe: a desktop, blended lines, a window's frame)
FRAME_RUNS: Final = 6

#: names of the normalised variants a query can have (a bank's ``normalize`` switch
#: turns matching of exactly these on or off)
VARIANTS: Final = frozenset(
    {"trim", "trim-even", "uncaption", "trim+uncaption", "trim+uncaption-even", "frame"}
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
        if not max(1, int(h * MIN_CAPTION)) <= n <= int(h * MAX_CAPTION):
            continue
        # a plain bar with sparse text: mostly uniform rows (a natural sky is not)
        if (near >= UNIFORM).mean() >= CAPTION_UNIFORM_ROWS:
            box = _cut(box, edge, n)
    return box


def _levels(lines: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Level of each line (``lines``: N x L x C): the mean over its channels of their
    medians on about SAMPLES pixels of it (a line of text on a bar keeps the bar's
    level; a flat line of another shade does not)."""
    step = max(1, lines.shape[1] // SAMPLES)
    medians = np.median(lines[:, ::step], axis=1)
    return np.asarray(medians.mean(axis=1), dtype=np.float64)


def _sharp_run(lines: npt.NDArray[np.uint8]) -> int:
    """Length of the leading run of ``lines`` that is a border ending sharply, 0 when
    there is none. The run: uniform lines of the first line's colour whose level stays
    within STEP of the first line's (a border is flat). It ends sharply at a line whose
    level jumps by STEP from the line before (a frame beside a picture edge of nearly
    its colour), or when one of the BLUR_LINES + 1 lines after it keeps under
    SHARP_AFTER of the colour (a codec's blurred lines are cut with the run). A run
    that drifts or fades out instead is a picture's own flat edge: 0."""
    colour = _colour(lines[0])
    n = _run(lines, colour, UNIFORM).size
    if n == 0:
        return 0
    levels = _levels(lines[: n + 1])
    drift = np.flatnonzero(np.abs(levels - levels[0]) >= STEP)
    if drift.size:
        j = int(drift[0])
        if abs(levels[j] - levels[j - 1]) >= STEP:
            return j
        if j < n:
            return 0
    after = np.flatnonzero(_near(lines[n : n + BLUR_LINES + 1], colour) < SHARP_AFTER)
    return n + int(after[0]) if after.size else 0


def trim_sharp(pixels: npt.NDArray[np.uint8], box: Box) -> Box:
    """``box`` without the borders on each of its edges that end sharply (up to
    FRAME_RUNS nested ones per edge, see :func:`_sharp_run`): a window frame beside a
    picture edge of nearly its colour stops at the step between them, and a picture's
    own flat edge, which fades out, is kept. Each edge may lose MAX_BORDER of the
    side of ``box`` as given (a small picture on a wide canvas is cut out whole, and
    then refused by its area)."""
    given = {"top": box.bottom - box.top, "left": box.right - box.left}
    for edge in ("top", "bottom", "left", "right"):
        view = _view(pixels, box)
        side = view.shape[0] if edge in ("top", "bottom") else view.shape[1]
        if min(view.shape[:2]) < MIN_SIDE:
            continue
        depth = int(given["top" if edge in ("top", "bottom") else "left"] * MAX_BORDER)
        lines = _edge_lines(view, edge, min(depth, side - 1))
        cut = 0
        for _ in range(FRAME_RUNS):
            if cut >= lines.shape[0]:
                break
            n = _sharp_run(lines[cut:])
            if n == 0:
                break
            cut += n
        box = _cut(box, edge, cut)
    return box


def _band_ends(near: npt.NDArray[np.float64], uniform: npt.NDArray[np.bool_]) -> list[int]:
    """Rows where a band may end: after each last uniform row of a stretch, the row of
    least share among the next BLUR_LINES + 1 (a codec's blurred rows go with the
    band) when it is at least SHARP_DROP under the uniform row's share."""
    ends: list[int] = []
    for last in np.flatnonzero(uniform[:-1] & ~uniform[1:]):
        window = near[last + 1 : last + 2 + BLUR_LINES]
        j = int(np.argmin(window))
        if window[j] <= near[last] - SHARP_DROP:
            ends.append(int(last) + 1 + j)
    return ends


def _flat_band(
    lines: npt.NDArray[np.uint8], near: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``near`` (shares of the band's colour, row by row) up to the first uniform row
    whose level is STEP or more from the first uniform row's: a band's background is flat,
    so it ends there. A row that steps abruptly (STEP from the row before) stays, with
    share 0, as the row after the band; one reached by a drift (a picture's own
    gradient) does not, so no band ends at it."""
    uniform = near >= UNIFORM
    if not uniform.any():
        return near
    levels = _levels(lines[: near.size])
    ref = levels[int(np.argmax(uniform))]
    off = np.flatnonzero(uniform & (np.abs(levels - ref) >= STEP))
    if not off.size:
        return near
    stop = int(off[0])
    if abs(levels[stop] - levels[stop - 1]) >= STEP:
        out = near[: stop + 1].copy()
        out[stop] = 0.0
        return out
    return near[:stop]


def uncaption_sharp(pixels: npt.NDArray[np.uint8], box: Box) -> Box:
    """``box`` without a caption band at its top and/or bottom, cut at the FARTHEST row
    (at most MAX_CAPTION of the height) where a uniform row of the band's colour is
    followed by a row SHARP_DROP less of it (:func:`_band_ends`), the band up to there
    being mostly that colour (every row CAPTION_BACKGROUND, CAPTION_UNIFORM_ROWS of
    them uniform, its uniform rows of one flat level: :func:`_flat_band`): a caption over
    a picture whose own edge is mostly the bar's colour ends where the picture starts, not where the
    colour does."""
    for edge in ("top", "bottom"):
        view = _view(pixels, box)
        h = view.shape[0]
        if min(view.shape[:2]) < MIN_SIDE:
            continue
        limit = int(h * MAX_CAPTION)
        lines = _edge_lines(view, edge, limit + 1)
        if lines.shape[0] < 2:
            continue
        colour = _colour(lines[0])
        near = _run(lines, colour, CAPTION_BACKGROUND)
        if near.size < lines.shape[0]:
            near = np.concatenate([near, _near(lines[near.size : near.size + 1], colour)])
        near = _flat_band(lines, near)
        uniform = near >= UNIFORM
        ends = np.asarray(_band_ends(near, uniform), dtype=np.int64)
        ends = ends[(ends >= max(1, int(h * MIN_CAPTION))) & (ends <= limit)]
        shares = np.cumsum(uniform)[ends - 1] / ends
        ends = ends[shares >= CAPTION_UNIFORM_ROWS]
        if ends.size:
            box = _cut(box, edge, int(ends[-1]))
    return box


def _even(box: Box, h: int, w: int) -> Box:
    """``box`` with each pair of opposite edges cut by the smaller of their two cuts:
    padding and letterbox bars come in equal pairs, and a picture whose own edge is
    as flat as the bar beside it made one of the pair look wider."""
    tb = min(box.top, h - box.bottom)
    lr = min(box.left, w - box.right)
    return Box(tb, h - tb, lr, w - lr)


class _Cuts:
    """:func:`trim` and :func:`uncaption` (or with ``sharp``, :func:`trim_sharp` and
    :func:`uncaption_sharp`) of one picture, each box worked out once."""

    def __init__(self, pixels: npt.NDArray[np.uint8]) -> None:
        self.pixels = pixels
        self._done: dict[tuple[str, Box], Box] = {}

    def _get(self, cut: Callable[[npt.NDArray[np.uint8], Box], Box], box: Box) -> Box:
        key = (cut.__name__, box)
        if key not in self._done:
            self._done[key] = cut(self.pixels, box)
        return self._done[key]

    def trim(self, box: Box, *, sharp: bool = False) -> Box:
        return self._get(trim_sharp if sharp else trim, box)

    def uncaption(self, box: Box, *, sharp: bool = False) -> Box:
        return self._get(uncaption_sharp if sharp else uncaption, box)


def _frames(cuts: _Cuts, full: Box, *, even: bool, sharp: bool = False) -> Box:
    """Caption bands and borders cut in turn, ROUNDS times at most (a screenshot's
    desktop, then its window's title bar and frame); with ``even``, each trim cuts
    the left and right edges alike (the smaller cut: a window's side frames match);
    with ``sharp``, only borders and bands that end sharply (``frame``)."""
    box = full
    for _ in range(ROUNDS):
        # caption first: a trim stops at a text line, where a caption band starts
        inner = cuts.uncaption(box, sharp=sharp)
        step = cuts.trim(inner, sharp=sharp)
        if even:
            lr = min(step.left - inner.left, inner.right - step.right)
            step = step._replace(left=inner.left + lr, right=inner.right - lr)
        if step == box:
            break
        box = step
    return box


def normalize_boxes(pixels: npt.NDArray[np.uint8]) -> dict[str, Box]:
    """Named crop boxes of ``pixels`` (``H x W x 3`` uint8): ``trim``, ``trim-even``,
    ``uncaption``, ``trim+uncaption``, ``trim+uncaption-even``, ``frame`` (at most six
    PDQs more per query), each only when it cuts
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
        "frame": _frames(cuts, full, even=False, sharp=True),
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
