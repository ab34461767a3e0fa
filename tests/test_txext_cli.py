"""python-threatexchange's own CLI with ``tipline.txext`` enabled: the ``threatexchange``
console script in a private state folder (HOME and XDG pointed at the test's folder)
adds the extension, fetches local-file collaborations into tipline's index and hashes
and matches every photo of ``reference/pdq``: the same hashes and the same matches
(image, bank entry, integer distance) as ``tipline hash`` and ``tipline match``."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("threatexchange")

from threatexchange.cli.main import inner_main

import tipline
from _cli import run_tipline
from _clock import HANG_SECONDS
from conftest import migrated_sqlite

TX = Path(sys.executable).with_name("threatexchange")
SRC = str(Path(tipline.__file__).resolve().parents[1])
#: The known images: one pytx collaboration (and one tipline bank entry) each.
KNOWN = (
    "bridge-mods/aaa-orig.jpg",
    "modes/P.png",  # pytx's own pdq hashes the palette indices: 100+ bits away
    "pen-and-coaster.png",
    "labelme-subset/q0122.jpg",
)
PHOTOS = (".jpg", ".png", ".webp")


def _collab(rel: str) -> str:
    return rel.replace("/", "_").replace(".", "_").replace("-", "_")


@pytest.fixture
def tx(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TX_", "XDG_"))} | {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
    }

    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(TX), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.stdout

    return run, home / ".threatexchange"


def _in_process(state: Path, *args: str) -> str:
    """The same CLI entry point as the console script, without a fresh interpreter per
    photo (about 2 s each)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        inner_main(list(args), state_dir=state)
    return out.getvalue()


def test_threatexchange_cli_with_the_extension_matches_like_tipline(
    tx, tmp_path: Path, reference_dir: Path
) -> None:
    if not TX.exists():
        pytest.skip("the threatexchange console script is not installed")
    run, state = tx
    pdq_dir = reference_dir / "pdq"
    photos = sorted(p for p in pdq_dir.rglob("*") if p.suffix in PHOTOS)
    assert len(photos) >= 40

    added = run("config", "extensions", "add", "tipline.txext")
    assert "tipline_pdq - TiplineHashedPdqSignal" in added
    assert "tipline.txext" in _in_process(state, "config", "extensions", "list")

    # tipline's own CLI: hashes, and a bank of the known images (on SQLite: matching on
    # PostgreSQL is test_cli_match's; what this compares is the two CLIs' answers)
    (tmp_path / "data").mkdir()
    db_url = migrated_sqlite(tmp_path / "data" / "tipline.db")
    tl_env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
    }
    hashed = run_tipline(["hash", "-s", "pdq", *map(str, photos)], env=tl_env, cwd=tmp_path)
    assert hashed.returncode == 0, hashed.stderr
    tipline_pdq: dict[str, str] = {}  # photo -> hash, "" below quality 50 (pytx's rule)
    for line in hashed.stdout.splitlines():
        _, value, quality, *rest = line.split(" ")
        tipline_pdq[rest[-1]] = "" if "low_quality" in rest else value
        assert int(quality.removeprefix("q=")) >= 50 or "low_quality" in rest
    assert set(tipline_pdq) == {str(p) for p in photos}
    assert sum(1 for v in tipline_pdq.values() if not v) >= 1  # low-quality ones are covered

    # pytx's CLI: the same hash for every photo, nothing where the quality is too low.
    for photo in photos:
        out = _in_process(state, "hash", "-S", "tipline_pdq", "photo", str(photo))
        want = f"tipline_pdq {tipline_pdq[str(photo)]}\n" if tipline_pdq[str(photo)] else ""
        assert out == want, photo
    p_png = str(pdq_dir / "modes/P.png")
    pytx_own = _in_process(state, "hash", "-S", "pdq", "photo", p_png).split()[1]
    assert pytx_own != tipline_pdq[p_png]  # what the extension's hasher fixes

    bank_lines = []
    entry_of: dict[str, str] = {}
    for rel in KNOWN:
        value = tipline_pdq[str(pdq_dir / rel)]
        assert value
        collab_file = tmp_path / f"{_collab(rel)}.txt"  # pytx's entry point, in-process
        known = str(pdq_dir / rel)
        collab_file.write_text(_in_process(state, "hash", "-S", "tipline_pdq", "photo", known))
        edit = ("config", "collab", "edit", "local_file", "--create", _collab(rel))
        _in_process(state, *edit, "--filename", str(collab_file))
        bank_lines.append(f"pdq {value}\n")
        entry_of[f"pdq:{value}"] = _collab(rel)
    fetched = _in_process(state, "fetch")
    assert fetched == ""
    assert (state / "index" / "tipline_pdq.index").is_file()
    assert not (state / "index" / "tipline_pdq.index").read_bytes().startswith(b"\x80")

    (tmp_path / "known.txt").write_text("".join(bank_lines))
    for args in (
        ["bank", "create", "known", "-t", "pdq=31"],
        ["bank", "import", "known", str(tmp_path / "known.txt")],
    ):
        done = run_tipline(args, env=tl_env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    matched = run_tipline(["match", *map(str, photos)], env=tl_env, cwd=tmp_path)
    assert matched.returncode == 0, matched.stderr
    want: set[tuple[str, str, int]] = set()
    for line in matched.stdout.splitlines():
        item, bank, entry, signal, distance, *_ = line.split("\t")
        assert bank == "known" and signal == "pdq"
        if tipline_pdq[item]:  # pytx (and so the extension) does not match below quality 50
            want.add((item, entry_of[entry], int(distance.removeprefix("distance="))))

    got: set[tuple[str, str, int]] = set()
    for photo in photos:
        out = _in_process(state, "match", "--all", "-S", "tipline_pdq", "photo", str(photo))
        for line in out.splitlines():
            signal, distance, collab, category = line.split(" ")
            assert signal == "tipline_pdq" and category == "INVESTIGATION_SEED"
            got.add((str(photo), collab.strip("()"), int(distance)))
    assert got == want
    # Every known image matches itself, its variants across files, and the bridge's
    # edits match two banked bridges (the RGB original and the palette one).
    assert len(want) > 2 * len(KNOWN)
    assert {c for _, c, d in want if d == 0} == set(entry_of.values())
    print(f"\n{len(photos)} photos: {len(want)} matches, identical in both CLIs")

    # The console script itself answers the same for one photo.
    one = str(pdq_dir / "bridge-mods/blur-a-lot.jpg")
    out = run("match", "--all", "photo", one)
    assert {
        (one, c.strip("()"), int(d)) for _, d, c, _ in (x.split(" ") for x in out.splitlines())
    } == {w for w in want if w[0] == one}


def _clip(folder: Path, pattern: str) -> Path:
    """A benign 3 s video of one of ffmpeg's generated patterns."""
    out = folder / f"{pattern}.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi"),
            *("-i", f"{pattern}=size=320x240:rate=10", "-t", "3", "-c:v", "mpeg4", str(out)),
        ],
        check=True,
        timeout=HANG_SECONDS,
    )
    return out


def test_threatexchange_cli_hashes_and_matches_video_with_tipline_vpdq(tx, tmp_path: Path) -> None:
    if not TX.exists():
        pytest.skip("the threatexchange console script is not installed")
    import json

    from tipline.signals.vpdq import format_pytx_json, parse_vpdq_text

    run, state = tx
    run("config", "extensions", "add", "tipline.txext")
    # generated 3 s clips (ffmpeg's test patterns): each is hashed three times here and a
    # 2 MB reference video costs ~0.9 CPU-s per vPDQ hash
    known = _clip(tmp_path, "testsrc")
    other = _clip(tmp_path, "mandelbrot")
    hashed = run_tipline(["hash", "-s", "vpdq", "-f", "jsonl", str(known)])
    assert hashed.returncode == 0, hashed.stderr
    (signal,) = json.loads(hashed.stdout)["signals"]
    want = format_pytx_json(parse_vpdq_text(signal["value"]))
    line = run("hash", "-S", "tipline_vpdq", "video", str(known))
    assert line == f"tipline_vpdq {want}\n"  # tipline's frames, in pytx's JSON form
    (tmp_path / "videos.txt").write_text(line)
    _in_process(
        state,
        "config",
        "collab",
        "edit",
        "local_file",
        "--create",
        "videos",
        "--filename",
        str(tmp_path / "videos.txt"),
    )
    _in_process(state, "fetch")
    index_file = state / "index" / "tipline_vpdq.index"
    assert index_file.is_file() and not index_file.read_bytes().startswith(b"\x80")
    assert _in_process(state, "match", "-S", "tipline_vpdq", "video", str(known)) == (
        "tipline_vpdq 100%[100%] (videos) INVESTIGATION_SEED\n"
    )
    assert _in_process(state, "match", "-S", "tipline_vpdq", "video", str(other)) == ""
