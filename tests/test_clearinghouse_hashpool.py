"""The intake's hashing processes: the same signals as hashing in the calling thread,
a worker killed (the OOM killer on a hostile file) does not disable the intake, and
what crosses the pipe (JSON, no pickle) comes back as it was sent."""

from __future__ import annotations

import io
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from _web_seed import picture
from tipline.errors import (
    BusyError,
    DecompressionBombError,
    InputError,
    MediaError,
    TiplineError,
    UnsupportedMediaError,
)
from tipline.services.clearinghouse.hashpool import (
    NICE,
    HashPool,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
)
from tipline.services.clearinghouse.intake import INTAKE_HASH_OPTIONS
from tipline.signals.base import Signal, VideoFrame
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, HashResult, hash_bytes
from tipline.signals.limits import MediaLimits


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(picture(seed))).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def test_the_pool_hashes_as_the_calling_thread_does_and_survives_a_killed_worker() -> None:
    limits = MediaLimits()
    pool = HashPool(1)
    try:
        pids = pool.start()
        assert pids and os.getpid() not in pids
        # below the serving process's priority, so triage is not queued behind hashes
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} == {min(19, mine + NICE)}
        data = _jpeg(1)
        here = hash_bytes(data, "a.jpg", INTAKE_HASH_OPTIONS, limits=limits)
        there = pool.hash(data, "a.jpg", INTAKE_HASH_OPTIONS, limits)
        assert here.ok and there.ok and there.media == "photo"
        assert there.signals == here.signals
        assert {s.type for s in there.signals} == {"pdq", "md5", "sha1", "sha256"}
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        other = _jpeg(2)
        after = pool.hash(other, "b.jpg", INTAKE_HASH_OPTIONS, limits)
        assert (
            after.signals == hash_bytes(other, "b.jpg", INTAKE_HASH_OPTIONS, limits=limits).signals
        )
        assert not pids & pool.start()
    finally:
        pool.close()


def _dies_on_every_file(conn: Connection, nice: int) -> None:
    """A worker that is ready, reads one request and dies (as the OOM killer would)."""
    conn.send_bytes(b"{}")
    conn.recv_bytes()
    conn.recv_bytes()
    os._exit(9)


class _Deadly(HashPool):
    _serve = staticmethod(_dies_on_every_file)


def test_a_file_that_kills_the_worker_twice_is_a_media_error_and_the_pool_lives_on() -> None:
    pool = _Deadly(1)
    try:
        first = pool.start()
        result = pool.hash(_jpeg(3), "bomb.jpg", INTAKE_HASH_OPTIONS, MediaLimits())
        assert not result.ok and isinstance(result.error, MediaError)
        assert "died" in str(result.error) and result.size == len(_jpeg(3))
        # two workers died; a third stands ready
        assert len(pool.start()) == 1 and not first & pool.start()
    finally:
        pool.close()


def test_a_closed_pool_refuses_work() -> None:
    pool = HashPool(1)
    pool.start()
    pool.close()
    with pytest.raises(RuntimeError):
        pool.hash(_jpeg(4), "a.jpg", INTAKE_HASH_OPTIONS, MediaLimits())


_hex = st.binary(min_size=32, max_size=32).map(bytes.hex)
_frames = st.lists(
    st.builds(
        VideoFrame,
        index=st.integers(0, 10**6),
        quality=st.integers(0, 100),
        hash=st.binary(min_size=32, max_size=32),
        seconds=st.floats(0, 1e5, allow_nan=False),
    ),
    max_size=4,
).map(tuple)
_signal = st.builds(
    Signal,
    type=st.sampled_from(["pdq", "md5", "sha1", "sha256", "vpdq"]),
    value=_hex,
    quality=st.none() | st.integers(0, 100),
    low_quality=st.booleans(),
    variant=st.none() | st.sampled_from(["rot90", "exif_raw", "trim"]),
    frames=_frames,
)
_error = st.none() | st.builds(
    lambda cls, message, path: cls(message, path=path),
    st.sampled_from([MediaError, UnsupportedMediaError, DecompressionBombError, InputError]),
    st.text(max_size=40),
    st.none() | st.text(max_size=20),
)


@given(
    path=st.text(max_size=30),
    media=st.none() | st.sampled_from(["photo", "video"]),
    size=st.none() | st.integers(0, 2**40),
    signals=st.lists(_signal, max_size=5).map(tuple),
    error=_error,
)
def test_a_result_crosses_the_pipe_unchanged(
    path: str,
    media: str | None,
    size: int | None,
    signals: tuple[Signal, ...],
    error: TiplineError | None,
) -> None:
    sent = HashResult(path=path, media=media, size=size, signals=signals, error=error)
    got = decode_result(encode_result(sent))
    assert (got.path, got.media, got.size, got.signals) == (path, media, size, signals)
    if error is None:
        assert got.error is None
    else:
        assert type(got.error) is type(error) and str(got.error) == str(error)


def test_an_error_of_another_kind_comes_back_a_media_error_with_its_message() -> None:
    got = decode_result(encode_result(HashResult(path="x", error=BusyError("pixels busy"))))
    assert type(got.error) is MediaError and str(got.error) == "pixels busy"


@given(
    name=st.text(max_size=30),
    signals=st.lists(st.sampled_from(["pdq", "md5", "vpdq"]), max_size=3).map(tuple),
    decode=st.sampled_from(list(DecodeMode)),
    fps=st.floats(0, 60, allow_nan=False),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    limits=st.builds(
        MediaLimits,
        max_file_bytes=st.integers(1, 2**40),
        max_image_pixels=st.integers(1, 2**34),
        max_video_seconds=st.floats(0.001, 1e6, allow_nan=False),
    ),
)
def test_a_request_header_crosses_the_pipe_unchanged(
    name: str,
    signals: tuple[str, ...],
    decode: DecodeMode,
    fps: float,
    flags: tuple[bool, bool, bool],
    limits: MediaLimits,
) -> None:
    options = HashOptions(
        signals=signals,
        dihedral=flags[0],
        decode=decode,
        video_fps=fps,
        exif_raw=flags[1],
        normalize=flags[2],
    )
    assert decode_request(encode_request(name, options, limits)) == (name, options, limits)


def test_a_worker_that_cannot_be_replaced_fails_that_call_only() -> None:
    pool = HashPool(1)
    try:
        (pid,) = pool.start()
        os.kill(pid, signal.SIGKILL)
        started = pool._spawn
        tries: list[int] = []

        def fails_once() -> Any:
            tries.append(1)
            if len(tries) == 1:
                raise RuntimeError("a hashing process did not start")
            return started()

        pool._spawn = fails_once  # type: ignore[method-assign]
        data = _jpeg(5)
        with pytest.raises(RuntimeError, match="did not start"):
            pool.hash(data, "a.jpg", INTAKE_HASH_OPTIONS, MediaLimits())
        after = pool.hash(data, "a.jpg", INTAKE_HASH_OPTIONS, MediaLimits())
        assert after.ok and len(tries) == 2
        assert after.signals == hash_bytes(data, "a.jpg", INTAKE_HASH_OPTIONS).signals
    finally:
        pool.close()


VIDEO = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "video" / "chair-19-sd-bar.mp4"
)


def test_a_video_comes_back_with_every_frame_as_the_calling_thread_hashes_it() -> None:
    data = VIDEO.read_bytes()
    pool = HashPool(1)
    try:
        there = pool.hash(data, "v.mp4", INTAKE_HASH_OPTIONS, MediaLimits())
    finally:
        pool.close()
    here = hash_bytes(data, "v.mp4", INTAKE_HASH_OPTIONS)
    assert there.ok and there.media == "video"
    assert there.signals == here.signals
    assert sum(len(s.frames) for s in there.signals) > 10
