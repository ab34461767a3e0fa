"""Hashing of uploaded files in worker processes beside the serving process.

The reference PDQ (``pdqhash``) holds the GIL for the whole hash (~0.1-0.3 s for a
2 MP photo). Hashed in the request's thread, it stalls every other thread of the
process meanwhile: the triage thread (de-duplication holds the clearinghouse-wide
lock across ~20 database round trips, each waiting for the GIL again) and the event
loop. :class:`HashPool` runs :func:`~tipline.signals.hashing.hash_bytes` in a few
forkserver processes instead.

Each worker has its own pipe, and a calling thread takes an idle worker, writes the
request to it and reads the answer itself: no broker thread, no feeder thread (a
``ProcessPoolExecutor`` spent ~0.7 ms of the serving process's CPU per file in those
two), and nothing pickled. A request is two frames, a JSON header (name, options,
limits) and the file's bytes; the answer is one JSON document (media, size, signals
with their video frames, or the error's code and message). :meth:`HashPool.start`
starts the workers before the first upload (each imports the program's main module
once, which costs seconds under the ``tipline`` script).
"""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from tipline.errors import (
    DecompressionBombError,
    InputError,
    MediaError,
    MediaTooLargeError,
    TiplineError,
    UnsupportedMediaError,
)
from tipline.signals.base import Signal, VideoFrame
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, HashResult, forkserver_context, hash_bytes
from tipline.signals.limits import MediaLimits

#: the workers yield the CPU to the serving process (its triage thread holds the
#: de-duplication lock; a report waits for it from /finish): they still use every idle
#: cycle, so the intake's throughput is the same
NICE = 10

#: errors a worker's answer can name, by code (any other code comes back a MediaError)
_ERRORS: dict[str, type[TiplineError]] = {
    cls.code: cls
    for cls in (
        InputError,
        MediaError,
        UnsupportedMediaError,
        DecompressionBombError,
        MediaTooLargeError,
    )
}


def encode_request(name: str, options: HashOptions, limits: MediaLimits) -> bytes:
    """The JSON header of one request (the file's bytes follow in a frame of their own)."""
    return json.dumps(
        {
            "name": name,
            "options": {
                "signals": list(options.signals),
                "dihedral": options.dihedral,
                "decode": options.decode.value,
                "video_fps": options.video_fps,
                "exif_raw": options.exif_raw,
                "normalize": options.normalize,
            },
            "limits": {
                "max_file_bytes": limits.max_file_bytes,
                "max_image_pixels": limits.max_image_pixels,
                "max_video_seconds": limits.max_video_seconds,
            },
        }
    ).encode()


def decode_request(header: bytes) -> tuple[str, HashOptions, MediaLimits]:
    """Inverse of :func:`encode_request`."""
    doc = json.loads(header)
    o, lim = doc["options"], doc["limits"]
    options = HashOptions(
        signals=tuple(str(s) for s in o["signals"]),
        dihedral=bool(o["dihedral"]),
        decode=DecodeMode(o["decode"]),
        video_fps=float(o["video_fps"]),
        exif_raw=bool(o["exif_raw"]),
        normalize=bool(o["normalize"]),
    )
    limits = MediaLimits(
        max_file_bytes=int(lim["max_file_bytes"]),
        max_image_pixels=int(lim["max_image_pixels"]),
        max_video_seconds=float(lim["max_video_seconds"]),
    )
    return str(doc["name"]), options, limits


def encode_result(result: HashResult) -> bytes:
    """One worker answer: ``result`` as JSON (video frames' hashes in hex)."""
    error = result.error
    return json.dumps(
        {
            "path": result.path,
            "media": result.media,
            "size": result.size,
            "signals": [
                [
                    s.type,
                    s.value,
                    s.quality,
                    s.low_quality,
                    s.variant,
                    [[f.index, f.quality, f.hash.hex(), f.seconds] for f in s.frames],
                ]
                for s in result.signals
            ],
            "error": None
            if error is None
            else {"code": error.code, "message": error.message, "path": error.path},
        }
    ).encode()


def decode_result(answer: bytes) -> HashResult:
    """Inverse of :func:`encode_result` (an error of a code not in :data:`_ERRORS`
    comes back as a :class:`~tipline.errors.MediaError` with the same message)."""
    doc = json.loads(answer)
    error = None
    if doc["error"] is not None:
        e = doc["error"]
        error = _ERRORS.get(e["code"], MediaError)(str(e["message"]), path=e["path"])
    return HashResult(
        path=str(doc["path"]),
        media=doc["media"],
        size=doc["size"],
        signals=tuple(
            Signal(
                type=kind,
                value=value,
                quality=quality,
                low_quality=low,
                variant=variant,
                frames=tuple(
                    VideoFrame(index=i, quality=q, hash=bytes.fromhex(h), seconds=sec)
                    for i, q, h, sec in frames
                ),
            )
            for kind, value, quality, low, variant, frames in doc["signals"]
        ),
        error=error,
    )


def _serve(conn: Connection, nice: int) -> None:
    """A worker's loop: answer requests until the pipe closes."""
    if nice > 0:
        os.nice(nice)
    conn.send_bytes(b"ready")
    while True:
        try:
            header = conn.recv_bytes()
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        name, options, limits = decode_request(header)
        try:
            answer = encode_result(hash_bytes(data, name, options, limits=limits))
        except Exception as exc:  # a result that cannot be written: the file's error
            failed = MediaError(f"cannot hash: {type(exc).__name__}: {exc}")
            answer = encode_result(HashResult(path=name, size=len(data), error=failed))
        conn.send_bytes(answer)


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection


class HashPool:
    """``processes`` hashing workers, started on first use; safe to share between
    threads (each call has a worker to itself). A worker that dies (e.g. the OOM killer
    on a hostile file) is replaced, and the file is tried once more on the new one; a
    file that kills that one too is answered as a media error. A worker that cannot be
    started is the error of the call that tried, and the next call tries again."""

    #: a worker's loop (a module-level function: the worker imports it by name)
    _serve = staticmethod(_serve)

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        #: workers to start before (or instead of) waiting for an idle one
        self._missing = self.processes
        self._closed = False

    def _spawn(self) -> _Worker:
        ctx = forkserver_context()
        mine, theirs = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=self._serve, args=(theirs, NICE), name="tipline-intake-hash", daemon=True
        )
        process.start()
        theirs.close()
        worker = _Worker(process, mine)
        try:
            mine.recv_bytes()  # the worker is ready (its priority lowered)
        except (EOFError, OSError):
            _stop(worker)
            raise RuntimeError("a hashing process did not start") from None
        return worker

    def _refill(self) -> None:
        """Start the missing workers (each slot claimed first, so concurrent callers
        start one each; a slot whose start failed is missing again)."""
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("hash pool closed")
                if self._missing == 0:
                    return
                self._missing -= 1
            try:
                worker = self._spawn()
            except BaseException:
                with self._lock:
                    self._missing += 1
                raise
            with self._lock:
                closed = self._closed
                if not closed:
                    self._workers.append(worker)
            if closed:
                _stop(worker)
                raise RuntimeError("hash pool closed")
            self._idle.put(worker)

    def start(self) -> set[int]:
        """Start the workers now (each has answered once it is ready); their process ids."""
        self._refill()
        with self._lock:
            return {pid for w in self._workers if (pid := w.process.pid) is not None}

    def _retire(self, worker: _Worker) -> None:
        """Stop a worker whose pipe broke; another starts in its place."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
                self._missing += 1
        _stop(worker)

    def _take(self) -> _Worker:
        """An idle worker (waiting for one; starting missing ones first)."""
        while True:
            self._refill()
            try:
                return self._idle.get(timeout=_TAKE_POLL_SECONDS)
            except queue.Empty:  # look again for workers to start, or a closed pool
                continue

    def hash(self, data: bytes, name: str, options: HashOptions, limits: MediaLimits) -> HashResult:
        """:func:`hash_bytes` of ``data`` in a worker process."""
        header = encode_request(name, options, limits)
        for _attempt in range(2):
            worker = self._take()
            try:
                worker.conn.send_bytes(header)
                worker.conn.send_bytes(data)
                answer = worker.conn.recv_bytes()
            except (EOFError, OSError):  # the worker died (or the pool was closed)
                self._retire(worker)
                continue
            self._idle.put(worker)
            return decode_result(answer)
        return HashResult(
            path=name,
            size=len(data),
            error=MediaError("cannot hash: the hashing process died on this file"),
        )

    def close(self) -> None:
        """Stop the workers; waiting and later calls raise RuntimeError."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            _stop(worker)


#: how often a call waiting for an idle worker looks for workers to start (a wait is
#: woken at once by a worker coming back; this only bounds the wait after a failure)
_TAKE_POLL_SECONDS = 1.0


def _stop(worker: _Worker) -> None:
    worker.conn.close()  # the worker reads EOF and returns
    worker.process.join(timeout=10)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=10)
