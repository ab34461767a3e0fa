"""vPDQ throughput: tipline's video hashing against the ``vpdq`` package on one file.

Builds (once) a benign 720p H.264 slideshow with a slow zoom/pan from the Debian
wallpapers under ``/usr/share/backgrounds`` into ``bench/.corpus/video/`` (gitignored),
then hashes it at 1 frame/second and at every frame with

* tipline: ``tipline.signals.video.hash_video_frames`` (ffmpeg process + PDQ kernel),
* the anchor: ``vpdq.computeHash`` (Meta's C++ vpdq with libav, in-process),

and prints wall-clock seconds with CPU seconds beside them (user + system of every
thread; tipline's include its ffmpeg child, which decodes on threads of its own, so
on an idle multi-core machine tipline's wall time can be below its CPU time), frames
hashed per second, times real time, the wall-clock and CPU-time ratios, per-frame
drift between the two and whether each side's hashes match the other's at the video
level (vpdq's 80%/80% verdict).

Usage: ``python bench/video.py [--quick] [--repeat N]``. ``--quick`` uses a 12-second
clip and one repetition. Times are the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tipline.signals.base import VideoFrame
from tipline.signals.video import hash_video_frames, probe_video
from tipline.signals.vpdq import MATCH_PERCENT, match_percentages

CORPUS = Path(__file__).resolve().parent / ".corpus" / "video"
BACKGROUNDS = Path("/usr/share/backgrounds")
FPS = 30
SIZE = (1280, 720)
#: Target from issue 2: tipline at least this many times the vpdq package's speed.
TARGET = 1.5


def build_slideshow(seconds_per_photo: int, photos: int) -> Path:
    """A 720p30 H.264 slideshow (``photos`` wallpapers, each zooming/panning slowly)."""
    out = CORPUS / f"slideshow-720p-{photos * seconds_per_photo}s.mp4"
    if out.exists():
        return out
    sources = sorted(BACKGROUNDS.rglob("*.jpg"))[:photos]
    if len(sources) < photos:
        raise SystemExit(f"need {photos} JPEG wallpapers under {BACKGROUNDS}")
    CORPUS.mkdir(parents=True, exist_ok=True)
    w, h = SIZE
    frames = seconds_per_photo * FPS
    inputs: list[str] = []
    chains: list[str] = []
    for i, src in enumerate(sources):
        inputs += ["-i", str(src)]
        chains.append(
            f"[{i}:v]scale={w * 3 // 2}:{h * 3 // 2}:force_original_aspect_ratio=increase,"
            f"crop={w * 3 // 2}:{h * 3 // 2},"
            f"zoompan=z='min(zoom+0.001,1.2)':x='iw/2-(iw/zoom/2)+on*0.5':"
            f"y='ih/2-(ih/zoom/2)':d={frames}:s={w}x{h}:fps={FPS},setsar=1[v{i}]"
        )
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(photos))
    graph += f"concat=n={photos}:v=1:a=0,format=yuv420p[out]"
    tmp = out.with_suffix(".part.mp4")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", graph,
         "-map", "[out]", "-c:v", "libx264", "-preset", "fast", "-crf", "23", str(tmp)],
        check=True,
    )  # fmt: skip
    tmp.rename(out)
    return out


@dataclass
class Run:
    frames: list[VideoFrame]
    seconds: float  # wall clock, best of the repeats
    cpu: float  # CPU seconds (user + system, children included) of that run


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], list[VideoFrame]], repeat: int) -> Run:
    best: Run | None = None
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        frames = fn()
        run = Run(frames, time.perf_counter() - t0, _cpu() - c0)
        if best is None or run.seconds < best.seconds:
            best = run
    assert best is not None
    return best


def _vpdq(path: Path, seconds_per_hash: float) -> list[VideoFrame]:
    import vpdq

    return [
        VideoFrame(f.frame_number, f.quality, bytes.fromhex(f.hex), float(f.timestamp))
        for f in vpdq.computeHash(str(path), seconds_per_hash=seconds_per_hash)
    ]


def _drift(a: list[VideoFrame], b: list[VideoFrame]) -> tuple[float, int, float]:
    by_index = {f.index: f.hash for f in b}
    d = np.array(
        [
            (int.from_bytes(f.hash, "big") ^ int.from_bytes(by_index[f.index], "big")).bit_count()
            for f in a
            if f.index in by_index
        ]
    )
    return float(d.mean()), int(d.max()), float(np.mean(d == 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 s clip, one repetition")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    path = build_slideshow(3, 4) if args.quick else build_slideshow(5, 12)
    info = probe_video(str(path))
    duration = info.duration or 0.0
    print(
        f"file: {path.name}  {info.width}x{info.height} {info.codec} "
        f"{info.frame_rate:g} fps {duration:.1f} s; best of {repeat}"
    )
    header = (
        f"{'mode':10} {'engine':8} {'frames':>6} {'wall s':>7} {'cpu s':>6} {'frames/s':>9} "
        f"{'x real':>7} {'wall ratio':>10} {'cpu ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for mode, fps in (("1 fps", 1.0), ("every", 0.0)):
        ours = _timed(lambda fps=fps: hash_video_frames(str(path), fps=fps), repeat)
        theirs = _timed(lambda fps=fps: _vpdq(path, 1.0 / fps if fps else 0.0), repeat)
        ratio = theirs.seconds / ours.seconds
        cpu_ratio = theirs.cpu / ours.cpu
        rows = (("tipline", ours, ratio, cpu_ratio), ("vpdq", theirs, 1.0, 1.0))
        for name, run, r, c in rows:
            print(
                f"{mode:10} {name:8} {len(run.frames):6d} {run.seconds:7.2f} {run.cpu:6.2f} "
                f"{len(run.frames) / run.seconds:9.1f} {duration / run.seconds:7.1f} "
                f"{r:9.2f}x {c:8.2f}x"
            )
        q1, c1 = match_percentages(ours.frames, theirs.frames)
        q2, c2 = match_percentages(theirs.frames, ours.frames)
        same = [f.index for f in ours.frames] == [f.index for f in theirs.frames]
        verdict = min(q1, c1, q2, c2) >= MATCH_PERCENT
        mean, worst, exact = _drift(ours.frames, theirs.frames)
        print(
            f"{'':10} frames identical: {same}; tipline->vpdq {q1:.1f}%/{c1:.1f}%, "
            f"vpdq->tipline {q2:.1f}%/{c2:.1f}% -> match both ways: {verdict}; "
            f"drift mean {mean:.2f} max {worst} bits, {exact:.0%} bit-exact"
        )
        ok = ok and same and verdict and ratio >= TARGET
    print(f"target: tipline >= {TARGET}x vpdq with identical verdicts: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
