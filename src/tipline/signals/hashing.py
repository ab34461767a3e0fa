"""Hash one piece of media every requested way in a single read.

This module is the one entry point the CLI, the scanner and the HTTP API use to turn
media (a path or bytes) into signals. Expected failures never raise out of
:func:`hash_path` / :func:`hash_bytes`: they come back as ``HashResult.error``.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import cast

from tipline.errors import (
    InputError,
    MediaError,
    MediaTooLargeError,
    MissingExtraError,
    TiplineError,
    UnsupportedMediaError,
)
from tipline.signals.base import (
    IndexKind,
    MediaKind,
    PhotoHasher,
    Signal,
    SignalType,
    VideoHasher,
    index_kind,
    registry_generation,
    signal_types,
)
from tipline.signals.budget import PixelBudget
from tipline.signals.decode import DecodeMode
from tipline.signals.limits import MediaLimits
from tipline.signals.media import Photo, Video

#: Signals computed when the caller does not choose.
DEFAULT_PHOTO_SIGNALS: tuple[str, ...] = ("pdq", "md5", "sha256")
DEFAULT_VIDEO_SIGNALS: tuple[str, ...] = ("vpdq", "video_md5", "video_sha256")


@dataclass(frozen=True, slots=True)
class HashOptions:
    """What to compute. ``signals`` empty means the defaults for the media kind."""

    signals: tuple[str, ...] = ()
    dihedral: bool = False
    decode: DecodeMode = DecodeMode.FAST
    video_fps: float = 1.0  # frames hashed per second of video; 0 = every frame
    #: photos with an EXIF orientation also get PDQ variant ``exif_raw`` (the pixels as
    #: stored: what python-threatexchange / HMA hash)
    exif_raw: bool = False
    #: photos also get PDQ variants ``trim``, ``uncaption``... (normalize.VARIANTS): the
    #: picture without borders, caption bars, screenshot frames; videos the vPDQ variant
    #: ``trim``: the frames without letterbox / pillarbox bars (matching only; never
    #: for bank entries)
    normalize: bool = False


@dataclass(frozen=True, slots=True)
class HashResult:
    """Signals of one item, or the reason it could not be hashed."""

    path: str
    media: str | None = None  # "photo" | "video" once sniffed
    size: int | None = None  # bytes read
    signals: tuple[Signal, ...] = field(default=())
    error: TiplineError | None = None

    @property
    def ok(self) -> bool:
        """True when the item was hashed."""
        return self.error is None


_HASHERS: dict[tuple[MediaKind, int], dict[str, SignalType]] = {}


def _hashers(media: MediaKind) -> dict[str, SignalType]:
    """Registered types that compute signals of ``media`` (photo or video); cached per
    registry generation (this runs for every file hashed)."""
    key = (media, registry_generation())
    found = _HASHERS.get(key)
    if found is None:
        hasher = PhotoHasher if media is MediaKind.PHOTO else VideoHasher
        found = _HASHERS[key] = {
            name: t
            for name, t in signal_types().items()
            if t.media in (media, MediaKind.ANY) and isinstance(t, hasher)
        }
    return found


def photo_signal_names() -> frozenset[str]:
    """Names of the signal types that hash photos (built-in and plugins)."""
    return frozenset(_hashers(MediaKind.PHOTO))


def video_signal_names() -> frozenset[str]:
    """Names of the signal types that hash videos (built-in and plugins)."""
    return frozenset(_hashers(MediaKind.VIDEO))


def check_signal_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate requested signal names; InputError naming the known ones otherwise."""
    known = photo_signal_names() | video_signal_names()
    out: list[str] = []
    for name in names:
        clean = name.strip().lower()
        if clean not in known:
            raise InputError(f"unknown signal {name!r} (known: {', '.join(sorted(known))})")
        if clean not in out:
            out.append(clean)
    return tuple(out)


def _wanted(options: HashOptions, media: MediaKind) -> list[SignalType]:
    """The types to compute for ``media``. A name asked for on the other media kind is
    translated through the type's ``counterpart`` (``--signals pdq,md5`` on a mixed
    folder gives videos their vPDQ and MD5 too); names without one are skipped."""
    own = _hashers(media)
    if not options.signals:
        defaults = DEFAULT_PHOTO_SIGNALS if media is MediaKind.PHOTO else DEFAULT_VIDEO_SIGNALS
        return [own[n] for n in defaults if n in own]
    types = signal_types()
    out: list[SignalType] = []
    for name in check_signal_names(options.signals):
        mapped = name if name in own else getattr(types[name], "counterpart", None)
        chosen = own.get(mapped) if isinstance(mapped, str) else None
        if chosen is not None and chosen not in out:
            out.append(chosen)
    return out


def _is_digest(signal_type: SignalType) -> bool:
    return index_kind(signal_type) is IndexKind.EXACT


def _hash_photo(
    data: bytes,
    fmt: str,
    options: HashOptions,
    limits: MediaLimits,
    budget: PixelBudget | None = None,
) -> tuple[Signal, ...]:
    """Perceptual signals first (decoding once), then digests, each in the order asked."""
    photo = Photo(
        data,
        fmt,
        decode=options.decode,
        dihedral=options.dihedral,
        limits=limits,
        budget=budget,
        exif_raw=options.exif_raw,
        normalize=options.normalize,
    )
    wanted = _wanted(options, MediaKind.PHOTO)
    ordered = [t for t in wanted if not _is_digest(t)] + [t for t in wanted if _is_digest(t)]
    signals: list[Signal] = []
    for signal_type in ordered:
        signals.extend(cast(PhotoHasher, signal_type).hash_photo(photo))
    return tuple(signals)


def hash_video(
    path: str,
    signals: Sequence[str] = DEFAULT_VIDEO_SIGNALS,
    *,
    fps: float = 1.0,
    limits: MediaLimits | None = None,
) -> tuple[Signal, ...]:
    """Signals of the video file at ``path``, in the order of ``signals`` (names of
    video signal types). ``fps`` is vPDQ hashes per second of video (0 = every frame).

    File digests stream on a thread while the frames decode. Raises MediaError /
    UnsupportedMediaError / DecompressionBombError for bad input.
    """
    hashers = _hashers(MediaKind.VIDEO)
    types = [hashers[n] for n in check_signal_names(signals) if n in hashers]
    return _video_signals(path, types, fps, limits or MediaLimits())


def _video_signals(
    path: str,
    types: Sequence[SignalType],
    fps: float,
    limits: MediaLimits,
    normalize: bool = False,
) -> tuple[Signal, ...]:
    streamed = [d for t in types if isinstance(d := getattr(t, "file_digest", None), str)]
    results: dict[str, Sequence[Signal]] = {}
    with Video(path, fps=fps, limits=limits, digests=streamed, normalize=normalize) as video:
        # frames first, so the streamed digests overlap the decoding
        for signal_type in sorted(types, key=_is_digest):
            results[signal_type.name] = cast(VideoHasher, signal_type).hash_video(video)
    return tuple(s for t in types for s in results[t.name])


def _hash_video(path: str, options: HashOptions, limits: MediaLimits) -> tuple[Signal, ...]:
    wanted = _wanted(options, MediaKind.VIDEO)
    if not wanted:  # e.g. only sha1 asked for: nothing applies to a video
        return ()
    try:
        import tipline.signals.video  # noqa: F401  (the decoder and its kernels)
    except ImportError as exc:
        raise MissingExtraError(
            f"video hashing is not available ({exc}); install it with: pip install 'tipline[video]'"
        ) from None
    return _video_signals(path, wanted, options.video_fps, limits, options.normalize)


def _unexpected(exc: Exception) -> MediaError:
    # Hostile input can make decoders raise anything; report it, keep the batch going.
    return MediaError(f"cannot hash: {type(exc).__name__}: {exc}")


def hash_bytes(
    data: bytes,
    name: str,
    options: HashOptions,
    *,
    limits: MediaLimits | None = None,
    budget: PixelBudget | None = None,
) -> HashResult:
    """Hash in-memory media; ``name`` is only used to label the result.

    Never raises for bad media: the reason is in ``HashResult.error``. Videos are
    written to a private temporary file because the video decoder reads files.
    ``limits`` default to :class:`~tipline.signals.limits.MediaLimits`' built-in values.
    A photo's decoded pixels are reserved from ``budget`` when given (the error is
    then a BusyError when they do not fit).
    """
    limits = limits or MediaLimits()
    from tipline.signals.sniff import SniffedKind, sniff

    size = len(data)
    try:
        if size == 0:
            raise MediaError("empty file (0 bytes)")
        if size > limits.max_file_bytes:
            raise MediaTooLargeError(
                f"{size} bytes exceeds the limit of {limits.max_file_bytes} bytes"
            )
        sniffed = sniff(data[:512])
        if sniffed.kind is SniffedKind.PHOTO:
            signals = _hash_photo(data, sniffed.format, options, limits, budget)
            return HashResult(path=name, media="photo", size=size, signals=signals)
        if sniffed.kind is SniffedKind.VIDEO:
            with tempfile.NamedTemporaryFile(suffix=f".{sniffed.format}") as tmp:
                tmp.write(data)
                tmp.flush()
                signals = _hash_video(tmp.name, options, limits)
            return HashResult(path=name, media="video", size=size, signals=signals)
        raise UnsupportedMediaError("not a supported photo or video format")
    except TiplineError as exc:
        return HashResult(path=name, size=size, error=exc)
    except Exception as exc:
        return HashResult(path=name, size=size, error=_unexpected(exc))


def hash_path(path: str, options: HashOptions, *, limits: MediaLimits | None = None) -> HashResult:
    """Hash the file at ``path``: photos are read once (digests and pixels from the same
    bytes); videos go to :func:`tipline.signals.video.hash_video`.

    Never raises for bad media or unreadable paths: the reason is in ``HashResult.error``.
    ``limits`` default to :class:`~tipline.signals.limits.MediaLimits`' built-in values.
    """
    limits = limits or MediaLimits()
    from tipline.signals.sniff import SNIFF_BYTES, SniffedKind, sniff

    size: int | None = None
    try:
        try:
            st_mode = os.stat(path).st_mode
            if stat.S_ISDIR(st_mode):
                raise MediaError("is a directory")
            if not stat.S_ISREG(st_mode):
                # FIFOs and devices could block or never end.
                raise MediaError("not a regular file")
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size == 0:
                    raise MediaError("empty file (0 bytes)")
                if size > limits.max_file_bytes:
                    raise MediaTooLargeError(
                        f"{size} bytes exceeds the limit of {limits.max_file_bytes} bytes"
                    )
                sniffed = sniff(fh.read(SNIFF_BYTES))
                if sniffed.kind is SniffedKind.PHOTO:
                    # One read into one buffer of exactly the size fstat saw (a file
                    # growing meanwhile cannot push the read past the size limit). The
                    # head is still in the reader's buffer, so rewinding costs no I/O,
                    # and there is no ``head + rest`` copy: on this hardware fresh
                    # memory costs more in page faults than the copy itself.
                    fh.seek(0)
                    data = fh.read(size)
        except FileNotFoundError:
            raise MediaError("no such file") from None
        except IsADirectoryError:
            raise MediaError("is a directory") from None
        except PermissionError:
            raise MediaError("permission denied") from None
        except OSError as exc:
            raise MediaError(f"cannot read: {exc.strerror or exc}") from None
        if sniffed.kind is SniffedKind.PHOTO:
            size = len(data)
            signals = _hash_photo(data, sniffed.format, options, limits)
            return HashResult(path=path, media="photo", size=size, signals=signals)
        if sniffed.kind is SniffedKind.VIDEO:
            signals = _hash_video(path, options, limits)
            return HashResult(path=path, media="video", size=size, signals=signals)
        raise UnsupportedMediaError("not a supported photo or video format")
    except TiplineError as exc:
        return HashResult(path=path, size=size, error=exc)
    except Exception as exc:
        return HashResult(path=path, size=size, error=_unexpected(exc))


def _hash_chunk(
    paths: list[str], options: HashOptions, limits: MediaLimits | None
) -> list[HashResult]:
    return [hash_path(p, options, limits=limits) for p in paths]


def forkserver_context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context hashing workers start from, with the hashing modules
    preloaded in the server (each worker starts with them imported)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        [
            "tipline.signals.hashing",
            "tipline.signals.decode",
            "tipline.signals.pdq",
            "tipline.signals.pdq_fast",
            "tipline.signals.warm",
        ]
    )
    return ctx


def process_pool(jobs: int, *, nice: int = 0) -> ProcessPoolExecutor:
    """A pool of ``jobs`` hashing worker processes, reusable across :func:`hash_many` calls;
    ``nice`` > 0 lowers the workers' scheduling priority by that much (``os.nice``).

    Uses :func:`forkserver_context`: workers never inherit the parent's threads
    (progress bars, DB pools).
    """
    ctx = forkserver_context()
    if nice > 0:
        return ProcessPoolExecutor(
            max_workers=jobs, mp_context=ctx, initializer=os.nice, initargs=(nice,)
        )
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)


def hash_many(
    paths: Iterable[str],
    options: HashOptions,
    jobs: int = 1,
    *,
    chunk: int = 4,
    executor: ProcessPoolExecutor | None = None,
    limits: MediaLimits | None = None,
) -> Iterator[HashResult]:
    """Hash many files on ``jobs`` worker processes; results come in input order.

    ``jobs <= 1`` (and no ``executor``) hashes in this process. Otherwise a pool is
    started for this call, or ``executor`` (from :func:`process_pool`) is reused and
    left running. At most ``jobs * 4`` chunks of ``chunk`` paths are in flight, so a
    huge folder walk is consumed lazily. Validates ``options.signals`` up front
    (InputError).
    """
    if options.signals:
        check_signal_names(options.signals)
    if executor is None and jobs <= 1:
        for path in paths:
            yield hash_path(path, options, limits=limits)
        return
    if executor is not None:
        yield from _pooled(executor, paths, options, limits, max(jobs, 1), chunk)
        return
    with process_pool(jobs) as pool:
        yield from _pooled(pool, paths, options, limits, jobs, chunk)


def _pooled(
    pool: ProcessPoolExecutor,
    paths: Iterable[str],
    options: HashOptions,
    limits: MediaLimits | None,
    jobs: int,
    chunk: int,
) -> Iterator[HashResult]:
    window: deque[Future[list[HashResult]]] = deque()
    it = iter(paths)

    def submit() -> bool:
        batch = [p for _, p in zip(range(chunk), it, strict=False)]
        if not batch:
            return False
        window.append(pool.submit(_hash_chunk, batch, options, limits))
        return True

    try:
        while len(window) < jobs * 4 and submit():
            pass
        while window:
            results = window.popleft().result()
            submit()
            yield from results
    finally:
        # A consumer that stops early (error, Ctrl-C) must not wait for queued work.
        for future in window:
            future.cancel()
