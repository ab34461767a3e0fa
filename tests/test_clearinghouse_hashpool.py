"""The intake's hashing processes: the same signals as hashing in the calling thread,
and a worker killed (the OOM killer on a hostile file) does not disable the intake."""

from __future__ import annotations

import io
import os
import signal

from PIL import Image

from _web_seed import picture
from tipline.services.clearinghouse.hashpool import NICE, HashPool
from tipline.services.clearinghouse.intake import INTAKE_HASH_OPTIONS
from tipline.signals.hashing import hash_bytes
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
