"""Synthetic hash-level report streams for the de-duplication replay (no pixels).

A stream is what the clearinghouse's de-duplication sees once every file is hashed:
reports in arrival order, each with its files; each file one *content* (files with the
same content are byte-identical copies, so their MD5, SHA-1 and SHA-256 agree: one
64-bit content number stands for the three digests); each content a PDQ hash with its
quality (photos) or a vPDQ frame set (videos). The ground truth is the perceptual
item each file was derived from.

The shape follows :mod:`.simulate` and NCMEC's 2023 figures: files per report from
:data:`.simulate.FILES_PER_REPORT`, about 3.1 files per distinct item (a skewed
popularity), ~47% video, viral bursts (one photo re-shared by hundreds of reports
within an hour of the stream), exact copies, and accounts that come back and share
addresses. The noise stands in for the transforms of :mod:`.simmedia`: a new copy of a
photo flips bits of its item's PDQ hash (most copies a few bits, some up to 28 as a
crop does); a new copy of a video trims up to 10% of its item's frames at each end and
flips a few bits of every frame. A few items are *look-alikes* of another item (a
different picture of the same scene, 20-45 bits away): they are what clustering may
wrongly merge. A few items have a PDQ quality under the matching floor: only their
exact copies can be found.

:func:`generate` is a pure function of :class:`ReplaySpec` (the seed included).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tipline.errors import InputError
from tipline.services.clearinghouse.simulate import FILES_PER_REPORT

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

PHOTO, VIDEO = 0, 1
#: noise of a new photo copy: (share of copies, least bits, most bits) flipped
PHOTO_NOISE = ((0.35, 0, 3), (0.45, 4, 14), (0.20, 15, 28))
#: most bits flipped per frame of a new video copy, and share trimmed at each end
FRAME_NOISE_BITS, MAX_TRIM = 10, 0.10
#: quality of a low-quality item (under the default matching floor of 50)
LOW_QUALITY = 30


@dataclass(frozen=True)
class ReplaySpec:
    """What to generate; defaults make a stream of a few thousand files."""

    reports: int = 2000
    seed: int = 0
    files_per_item: float = 3.1
    video_share: float = 0.47
    #: share of reports that are re-shares in viral bursts (one photo file each)
    viral_share: float = 0.02
    burst_reports: int = 500
    #: chance that a later file of an item is a byte copy of an earlier one
    exact_copy_share: float = 0.35
    viral_exact_share: float = 0.70
    low_quality_share: float = 0.03
    lookalike_share: float = 0.005
    mean_frames: float = 8.0
    max_frames: int = 64
    repeat_account_share: float = 0.35
    #: share of reports sent from an address shared by many accounts (a NAT)
    shared_ip_share: float = 0.05

    def check(self) -> None:
        """InputError unless the numbers make sense."""
        shares = (
            self.video_share,
            self.viral_share,
            self.exact_copy_share,
            self.viral_exact_share,
            self.low_quality_share,
            self.lookalike_share,
            self.repeat_account_share,
            self.shared_ip_share,
        )
        if self.reports < 1 or self.burst_reports < 1 or self.files_per_item < 1:
            raise InputError("replay stream: reports, burst_reports >= 1, files_per_item >= 1")
        if not all(0.0 <= s <= 1.0 for s in shares) or self.viral_share > 0.5:
            raise InputError("replay stream: shares must be within 0..1 (viral_share <= 0.5)")
        if not 1.0 <= self.mean_frames <= self.max_frames:
            raise InputError("replay stream: 1 <= mean_frames <= max_frames")


@dataclass(frozen=True)
class Stream:
    """A generated stream. Files are numbered in arrival order; reports are contiguous
    runs of files (``report_start``); contents are numbered by first appearance."""

    report_start: I64  # (reports + 1,) first file of each report
    report_account: I64
    report_ip: I64
    file_content: I64
    file_item: I64  # ground truth
    content_kind: npt.NDArray[np.int8]  # PHOTO or VIDEO
    content_pdq: U8  # (contents, 32); zero for videos
    content_quality: U8  # PDQ quality of the photo, or of every frame of the video
    frame_start: I64  # (contents + 1,) frames of content c: frames[frame_start[c]:...]
    frames: U8  # (frames, 32)

    @property
    def reports(self) -> int:
        """Number of reports."""
        return int(self.report_start.shape[0] - 1)

    @property
    def files(self) -> int:
        """Number of files."""
        return int(self.file_content.shape[0])

    def report_of_files(self) -> I64:
        """The report of every file."""
        sizes = np.diff(self.report_start)
        return np.repeat(np.arange(self.reports, dtype=np.int64), sizes)

    def video_file_share(self) -> float:
        """Share of files that are videos."""
        return float((self.content_kind[self.file_content] == VIDEO).mean())


def _flip(rng: np.random.Generator, rows: U8, bits: I64) -> U8:
    """``rows`` with each bit of row i flipped with chance ``bits[i] / 256`` (about
    ``bits[i]`` bits, binomially)."""
    out = rows.copy()
    chunk = 65536
    for lo in range(0, rows.shape[0], chunk):
        hi = min(lo + chunk, rows.shape[0])
        mask = rng.random((hi - lo, 256), dtype=np.float32) < (bits[lo:hi, None] / 256.0)
        out[lo:hi] ^= np.packbits(mask, axis=1)
    return out


def _report_times(spec: ReplaySpec, rng: np.random.Generator) -> tuple[I64, I64, int]:
    """(files per report, burst of each report or -1) in arrival order, and bursts."""
    viral_reports = int(spec.reports * spec.viral_share)
    bursts = -(-viral_reports // spec.burst_reports) if viral_reports else 0
    normal = spec.reports - viral_reports
    weights = np.asarray(FILES_PER_REPORT, dtype=np.float64)
    sizes = rng.choice(np.arange(1, len(weights) + 1), size=normal, p=weights / weights.sum())
    times = rng.random(normal)
    burst_of = np.full(normal, -1, dtype=np.int64)
    if bursts:
        starts = rng.random(bursts) * (1 - 1 / 720)
        member = np.arange(viral_reports) % bursts
        vtimes = starts[member] + rng.random(viral_reports) / 720  # within an hour of 30 days
        times = np.concatenate([times, vtimes])
        sizes = np.concatenate([sizes, np.ones(viral_reports, dtype=sizes.dtype)])
        burst_of = np.concatenate([burst_of, member.astype(np.int64)])
    order = np.argsort(times, kind="stable")
    return sizes[order].astype(np.int64), burst_of[order], bursts


def _items(
    spec: ReplaySpec, rng: np.random.Generator, file_burst: I64, bursts: int
) -> tuple[I64, int]:
    """The item of every file: bursts are items 0..bursts-1; every other item gets one
    file, the remaining files follow a skewed popularity (as :mod:`.simulate`)."""
    n = file_burst.shape[0]
    normal_files = np.flatnonzero(file_burst < 0)
    plain = max(1, round(n / spec.files_per_item) - bursts)
    item = file_burst.copy()
    slots = rng.permutation(normal_files)
    first = slots[:plain]
    item[first] = bursts + np.arange(first.shape[0])
    rest = slots[plain:]
    if rest.shape[0]:
        weights = 1.0 / (np.arange(plain) + 1.0) ** 0.7
        item[rest] = bursts + rng.choice(plain, size=rest.shape[0], p=weights / weights.sum())
    return item, bursts + plain


def _accounts(spec: ReplaySpec, rng: np.random.Generator, reports: int) -> tuple[I64, I64]:
    repeat = rng.random(reports) < spec.repeat_account_share
    repeat[0] = False
    fresh = np.cumsum(~repeat) - 1  # new account numbers in order
    earlier = np.floor(rng.random(reports) * (fresh + 1)).astype(np.int64)
    account = np.where(repeat, earlier, fresh)
    nat_pool = max(1, reports // 2000)
    shared = rng.random(reports) < spec.shared_ip_share
    ip = np.where(shared, rng.integers(0, nat_pool, reports), nat_pool + account)
    return account.astype(np.int64), ip.astype(np.int64)


def generate(spec: ReplaySpec) -> Stream:
    """The stream ``spec`` describes (same spec, same stream)."""
    spec.check()
    rng = np.random.default_rng(spec.seed)
    sizes, burst_of, bursts = _report_times(spec, rng)
    report_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    file_burst = np.repeat(burst_of, sizes)
    item, items = _items(spec, rng, file_burst, bursts)
    n = item.shape[0]

    # items: kind, quality, base hash (look-alikes start from another item's base)
    viral_files = int((file_burst >= 0).sum())
    video_p = min(1.0, spec.video_share * n / max(1, n - viral_files))
    kind = (rng.random(items) < video_p).astype(np.int8)
    kind[:bursts] = PHOTO
    item_quality = rng.integers(60, 101, items).astype(np.uint8)
    item_quality[rng.random(items) < spec.low_quality_share] = LOW_QUALITY
    base = rng.integers(0, 256, (items, 32), dtype=np.uint8)
    alike = np.flatnonzero((rng.random(items) < spec.lookalike_share) & (kind == PHOTO))
    alike = alike[alike > 0]
    if alike.shape[0]:
        model = np.floor(rng.random(alike.shape[0]) * alike).astype(np.int64)
        base[alike] = _flip(rng, base[model], rng.integers(20, 46, alike.shape[0]))
    nframes = np.minimum(spec.max_frames, 1 + rng.geometric(1 / spec.mean_frames, items))
    base_start = np.concatenate([[0], np.cumsum(nframes)]).astype(np.int64)
    base_frames = rng.integers(0, 256, (int(base_start[-1]), 32), dtype=np.uint8)

    # files: a later file of an item may be a byte copy of an earlier one of it
    by_item = np.lexsort((np.arange(n), item))
    group_first = np.r_[True, item[by_item][1:] != item[by_item][:-1]]
    starts = np.flatnonzero(group_first)
    rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[by_item] = rank_sorted
    share = np.where(file_burst >= 0, spec.viral_exact_share, spec.exact_copy_share)
    copy = (rank > 0) & (rng.random(n) < share)
    source = np.arange(n)
    pick = np.floor(rng.random(n) * rank).astype(np.int64)  # an earlier file of the item
    first_pos = np.empty(n, dtype=np.int64)
    first_pos[by_item] = np.repeat(starts, np.diff(np.r_[starts, n]))
    source[copy] = by_item[first_pos[copy] + pick[copy]]
    while True:  # follow copies of copies to the file that brought the content
        nxt = source[source]
        if np.array_equal(nxt, source):
            break
        source = nxt
    originals = np.flatnonzero(source == np.arange(n))
    content_of_original = np.full(n, -1, dtype=np.int64)
    content_of_original[originals] = np.arange(originals.shape[0])
    file_content = content_of_original[source]

    # contents: the noisy hash of each original file
    c_item = item[originals]
    c_kind = kind[c_item]
    c_quality = item_quality[c_item]
    c_pdq = np.zeros((originals.shape[0], 32), dtype=np.uint8)
    photos = np.flatnonzero(c_kind == PHOTO)
    band = rng.choice(len(PHOTO_NOISE), size=photos.shape[0], p=[b[0] for b in PHOTO_NOISE])
    lo = np.array([b[1] for b in PHOTO_NOISE])[band]
    hi = np.array([b[2] for b in PHOTO_NOISE])[band]
    flips = lo + np.floor(rng.random(photos.shape[0]) * (hi - lo + 1)).astype(np.int64)
    first_copy = rank[originals[photos]] == 0
    flips[first_copy & (file_burst[originals[photos]] >= 0)] = 0
    c_pdq[photos] = _flip(rng, base[c_item[photos]], flips)
    videos = np.flatnonzero(c_kind == VIDEO)
    total = nframes[c_item[videos]]
    cut = np.floor(rng.random((2, videos.shape[0])) * MAX_TRIM * total).astype(np.int64)
    length = np.maximum(1, total - cut[0] - cut[1])
    counts = np.zeros(originals.shape[0], dtype=np.int64)
    counts[videos] = length
    frame_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    within = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    rows = np.repeat(base_start[c_item[videos]] + cut[0], length) + within
    frame_bits = rng.integers(0, FRAME_NOISE_BITS + 1, rows.shape[0])
    frames = _flip(rng, base_frames[rows], frame_bits)
    account, ip = _accounts(spec, rng, int(sizes.shape[0]))
    return Stream(
        report_start=report_start,
        report_account=account,
        report_ip=ip,
        file_content=file_content,
        file_item=item,
        content_kind=c_kind,
        content_pdq=c_pdq,
        content_quality=c_quality,
        frame_start=frame_start,
        frames=frames,
    )


def save_stream(stream: Stream, directory: Path) -> None:
    """Write ``stream`` as one ``.npy`` file per array under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in fields(Stream):
        np.save(directory / f"{f.name}.npy", getattr(stream, f.name), allow_pickle=False)


def load_stream(directory: Path) -> Stream:
    """A stream written by :func:`save_stream`, memory-mapped read-only (a replay then
    reads each epoch's part as it goes); InputError when a file is missing or the
    arrays disagree."""
    arrays: dict[str, np.ndarray] = {}
    for f in fields(Stream):
        path = directory / f"{f.name}.npy"
        if not path.is_file():
            raise InputError(f"replay stream: {path} is missing")
        arrays[f.name] = np.load(path, mmap_mode="r", allow_pickle=False)
    stream = Stream(**arrays)
    contents = stream.content_kind.shape[0]
    ok = (
        stream.report_start.shape[0] >= 1
        and int(stream.report_start[-1]) == stream.files
        and stream.file_item.shape == stream.file_content.shape
        and stream.report_account.shape == stream.report_ip.shape == (stream.reports,)
        and stream.content_pdq.shape == (contents, 32)
        and stream.content_quality.shape == (contents,)
        and stream.frame_start.shape == (contents + 1,)
        and stream.frames.shape == (int(stream.frame_start[-1]), 32)
        and (stream.files == 0 or 0 <= int(stream.file_content.max()) < contents)
    )
    if not ok:
        raise InputError(f"replay stream: the arrays under {directory} disagree")
    return stream
