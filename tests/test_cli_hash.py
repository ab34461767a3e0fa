"""``tipline hash``: formats, folders, stdin, errors, exit status; run in-process through
the console script's ``main``, as a real process under another program, and on a terminal."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _cli import run_tipline
from _terminal import run_on_terminal
from tipline.signals.pdq import pdq_hash


def run(
    *args: str, stdin: bytes | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    if prefix:  # the command under another program: a real process
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "tipline.cli.main", "hash", *args],
            input=stdin.decode("latin-1") if stdin is not None else None,
            capture_output=True,
            text=True,
            encoding="latin-1",
            timeout=120,
            check=False,
        )
    else:  # in-process through the console script's main (no interpreter start)
        proc = run_tipline(["hash", *args], stdin=stdin, encoding="latin-1")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def scene(width: int = 640, height: int = 400, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "sub" / "deeper").mkdir(parents=True)
    scene(seed=1).save(root / "a.jpg", "JPEG", quality=90)
    scene(seed=2).save(root / "sub" / "b.png", "PNG")
    scene(seed=3).save(root / "sub" / "deeper" / "c.webp", "WEBP", quality=90)
    return root


@pytest.fixture(scope="module")
def bad_folder(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(folder, root, dirs_exist_ok=True)
    data = (folder / "a.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("plain text, not a picture\n")
    return root


def text_lines(out: str) -> list[list[str]]:
    return [line.split(" ") for line in out.splitlines()]


def test_folder_text_output(folder: Path) -> None:
    proc = run(str(folder))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = text_lines(proc.stdout)
    assert len(lines) == 9  # pdq, md5, sha256 for each of 3 files
    paths = [line[-1] for line in lines]
    assert paths[::3] == [
        str(folder / "a.jpg"),
        str(folder / "sub" / "b.png"),
        str(folder / "sub" / "deeper" / "c.webp"),
    ]
    pdq = lines[0]
    assert pdq[0] == "pdq" and len(pdq[1]) == 64 and pdq[2].startswith("q=")
    md5 = lines[1]
    assert md5 == ["md5", hashlib.md5((folder / "a.jpg").read_bytes()).hexdigest(), paths[0]]
    assert lines[2][0] == "sha256"


def test_bad_files_are_reported_and_the_rest_still_printed(bad_folder: Path) -> None:
    proc = run(str(bad_folder), str(bad_folder / "missing.jpg"))
    assert proc.returncode == 1
    errors = proc.stderr.splitlines()
    assert errors[-1] == "4 of 7 files failed"
    by_path = {line.split(": ")[1]: line for line in errors[:-1]}
    assert len(by_path) == len(errors) - 1 == 4
    assert "empty file" in by_path[str(bad_folder / "empty.jpg")]
    assert "truncated" in by_path[str(bad_folder / "truncated.jpg")]
    assert "not a supported" in by_path[str(bad_folder / "text.jpg")]
    assert "no such file" in by_path[str(bad_folder / "missing.jpg")]
    assert all(line.startswith("error: ") for line in errors[:-1])
    assert len(text_lines(proc.stdout)) == 9


def test_jsonl_and_csv(bad_folder: Path) -> None:
    proc = run("--format", "jsonl", str(bad_folder))
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 6
    ok = [r for r in records if r["error"] is None]
    assert len(ok) == 3
    assert [s["type"] for s in ok[0]["signals"]] == ["pdq", "md5", "sha256"]
    assert ok[0]["media"] == "photo" and ok[0]["size"] > 0
    failed = {Path(r["path"]).name: r["error"]["code"] for r in records if r["error"]}
    assert failed == {
        "empty.jpg": "bad-media",
        "truncated.jpg": "bad-media",
        "text.jpg": "unsupported-media",
    }

    proc = run("--format", "csv", "--signals", "pdq,md5", str(bad_folder))
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 6
    assert {r["type"] for r in rows} == {"pdq", "md5"}
    assert all(r["quality"] == "" for r in rows if r["type"] == "md5")


def test_stdin(folder: Path) -> None:
    data = (folder / "a.jpg").read_bytes()
    proc = run("-", stdin=data)
    assert proc.returncode == 0, proc.stderr
    lines = text_lines(proc.stdout)
    assert [line[-1] for line in lines] == ["-", "-", "-"]
    assert lines[1][1] == hashlib.md5(data).hexdigest()
    file_proc = run(str(folder / "a.jpg"))
    assert [line[:2] for line in text_lines(file_proc.stdout)] == [line[:2] for line in lines]


def test_parallel_output_is_identical(bad_folder: Path) -> None:
    one = run("-f", "jsonl", str(bad_folder))
    two = run("-f", "jsonl", "-j", "2", str(bad_folder))
    assert two.stdout == one.stdout
    assert two.stderr == one.stderr
    assert two.returncode == one.returncode == 1


def test_dihedral_and_exact_decode(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    scene(2400, 1800).save(big, "JPEG", quality=92)
    proc = run("--dihedral", "--exact-decode", "--signals", "pdq", str(big))
    assert proc.returncode == 0, proc.stderr
    lines = text_lines(proc.stdout)
    assert [line[3] for line in lines] == [
        "variant=orig",
        "variant=rot90",
        "variant=rot180",
        "variant=rot270",
        "variant=flipx",
        "variant=flipy",
        "variant=flipplus1",
        "variant=flipminus1",
    ]
    with Image.open(big) as im:
        assert lines[0][1] == pdq_hash(np.asarray(im.convert("RGB")))[0]


def test_unknown_signal_is_one_line_and_exit_2(folder: Path) -> None:
    proc = run("--signals", "pdq,nope", str(folder))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown signal 'nope'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_unreadable_directory(folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "perm"
    (root / "locked").mkdir(parents=True)
    shutil.copy(folder / "a.jpg", root / "a.jpg")
    (root / "locked").chmod(0)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # root ignores permission bits; drop the capabilities that let it.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop DAC capabilities")
        prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search")
    try:
        proc = run(str(root), prefix=prefix)
    finally:
        (root / "locked").chmod(0o755)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: {root / 'locked'}: permission denied",
        "1 of 2 files failed",
    ]
    assert len(text_lines(proc.stdout)) == 3


def test_progress_bar_only_on_a_terminal(folder: Path) -> None:
    proc, seen = run_on_terminal([sys.executable, "-m", "tipline.cli.main", "hash", str(folder)])
    assert proc.returncode == 0
    assert b"hashing" in seen and b"/3" in seen  # the bar, on the terminal
    assert len(proc.stdout.splitlines()) == 9 and b"hashing" not in proc.stdout
    quiet = run(str(folder))  # stderr is a pipe: no bar
    assert quiet.stderr == ""


def test_video_one_line_per_frame(folder: Path, tmp_path: Path) -> None:
    # a generated 12 s clip (ffmpeg's test pattern, 320x240 at 5 fps): one vPDQ frame a
    # second, as from a 2 MB reference video at a fraction of the decoding
    video = tmp_path / "pattern.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi"),
            *("-i", "testsrc=duration=12:size=320x240:rate=5", "-c:v", "mpeg4", str(video)),
        ],
        check=True,
        timeout=60,
    )
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2" + b"\0" * 100)
    proc = run(str(video), str(folder / "a.jpg"), str(broken))
    assert proc.returncode == 1
    lines = text_lines(proc.stdout)
    frames = [line for line in lines if line[0] == "vpdq"]
    assert len(frames) >= 10
    assert all(len(f[1]) == 64 and f[2].startswith("q=") and f[-1] == str(video) for f in frames)
    assert [f[-2] for f in frames[:2]] == ["t=0.000", "t=1.000"]
    types = [line[0] for line in lines if line[0] != "vpdq"]
    assert types == ["video_md5", "video_sha256", "pdq", "md5", "sha256"]
    errors = proc.stderr.splitlines()
    assert errors[0].startswith(f"error: {broken}: ")
    assert errors[-1] == "1 of 3 files failed"


def test_video_without_a_video_stream(tmp_path: Path, folder: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ffmpeg missing in CI")
        pytest.skip("ffmpeg not installed")
    audio = tmp_path / "audio-only.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(audio)],
        check=True,
        timeout=60,
    )
    proc = run(str(audio), str(folder / "a.jpg"))
    assert proc.returncode == 1
    errors = proc.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {audio}: ") and "video stream" in errors[0]
    assert errors[1] == "1 of 2 files failed"
    assert len(text_lines(proc.stdout)) == 3
