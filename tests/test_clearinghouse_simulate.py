"""``tipline simulate``: the stream's shape (files per item, video share, international
accounts, viral bursts, repeat accounts), determinism, perceptually distinct items, and a
run submitted through ISPWS to a real clearinghouse server whose stored reports and
routing agree with the ground truth."""

from __future__ import annotations

import io
import json
import subprocess
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from _cli import run_tipline
from _intake_server import intake_server
from tipline.config import RoutingTable
from tipline.errors import InputError
from tipline.services.clearinghouse import routing, simmedia
from tipline.services.clearinghouse import simulate as sim
from tipline.services.clearinghouse.geoip import GeoDatabase
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow


@pytest.fixture(scope="module")
def big_plan() -> sim.Plan:
    # the shape does not depend on the pictures' size: planning draws and checks each
    # item's picture, 5.4 CPU-s at the default 320 px, 1.5 at 96 (the same shape)
    spec = sim.SimulationSpec(
        seed=11, reports=600, wallpapers=None, viral_bursts=3, burst_reports=20, photo_side=96
    )
    return sim.plan(spec)


def test_the_stream_has_the_shape_of_ncmec_2023(big_plan: sim.Plan) -> None:
    plan = big_plan
    assert len(plan.reports) == 600
    assert plan.files / len(plan.items) == pytest.approx(3.1, abs=0.05)
    videos = sum(1 for r in plan.reports for f in r.files if plan.items[f.item].media == "video")
    assert videos / plan.files == pytest.approx(0.47, abs=0.02)
    abroad = sum(1 for r in plan.reports if plan.accounts[r.account].country != "US")
    assert abroad / len(plan.reports) == pytest.approx(0.92, abs=0.04)
    assert 2.3 < plan.files / len(plan.reports) < 3.3
    per_account = Counter(r.account for r in plan.reports)
    assert max(per_account.values()) >= 3  # accounts come back
    assert len(per_account) < len(plan.reports) * 0.9
    # every item is used; every US account has a state, others none
    assert {f.item for r in plan.reports for f in r.files} == set(range(len(plan.items)))
    for account in plan.accounts:
        assert (account.subdivision is not None) == (account.country == "US")


def test_viral_bursts_are_one_photo_reshared_by_many_accounts_within_an_hour(
    big_plan: sim.Plan,
) -> None:
    bursts: dict[int, list[sim.PlannedReport]] = {}
    for report in big_plan.reports:
        if report.viral_item is not None:
            bursts.setdefault(report.viral_item, []).append(report)
    assert len(bursts) == 3
    for item, reports in bursts.items():
        assert big_plan.items[item].viral and big_plan.items[item].media == "photo"
        assert len(reports) == 20
        assert len({r.account for r in reports}) == 20
        assert max(r.at for r in reports) - min(r.at for r in reports) <= timedelta(hours=1)
        assert all(f.item == item and f.potential_meme for r in reports for f in r.files)


def test_the_same_seed_gives_the_same_stream() -> None:
    spec = sim.SimulationSpec(seed=3, reports=30, wallpapers=None, photo_side=96)
    first, again = sim.plan(spec), sim.plan(spec)
    assert first == again
    assert sim.plan(replace(spec, seed=4)) != first
    photo = next(f for r in first.reports for f in r.files if first.items[f.item].media == "photo")
    clip = next(f for r in first.reports for f in r.files if first.items[f.item].media == "video")
    for planned in (photo, clip):
        data = sim.Renderer(first).render(planned)
        assert sim.Renderer(again).render(planned) == data
    assert Image.open(io.BytesIO(sim.render(first, photo))).format == "JPEG"
    assert sim.render(first, clip)[4:8] == b"ftyp"


def test_items_are_distinct_and_their_copies_stay_near_them() -> None:
    plan = sim.plan(sim.SimulationSpec(seed=5, reports=40))
    renderer = sim.Renderer(plan)
    originals = [
        np.unpackbits(np.frombuffer(simmedia.pdq_of(renderer.original(i))[0], np.uint8))
        for i in plan.items
    ]
    for a in range(len(originals)):
        for b in range(a):
            assert np.count_nonzero(originals[a] != originals[b]) >= sim.MIN_ITEM_DISTANCE
    assert any(i.source.wallpaper for i in plan.items) and any(
        i.source.wallpaper is None for i in plan.items
    )
    distances = [
        renderer.pdq_distance(f, renderer.render(f))
        for r in plan.reports
        for f in r.files
        if plan.items[f.item].media == "photo"
    ]
    assert distances and max(d for d in distances if d is not None) <= 40


def test_simulated_reports_only_go_to_loopback() -> None:
    assert sim.check_url("http://127.0.0.1:9/ispws") and sim.check_url("http://localhost/x")
    assert sim.check_url("http://[::1]:8000/ispws")
    with pytest.raises(InputError, match="loopback"):
        sim.check_url("http://192.0.2.10/ispws")
    with pytest.raises(InputError, match="never sent"):
        sim.check_url("https://exttest.cybertip.org/ispws", allow_remote=True)
    assert sim.check_url("http://192.0.2.10/ispws", allow_remote=True)
    with pytest.raises(InputError, match="http"):
        sim.check_url("file:///etc/passwd")
    done = _tipline("simulate", "--url", "http://192.0.2.10/ispws", "--password-stdin", stdin="x\n")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "loopback" in done.stderr


def _tipline(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` in this process (tests/_cli.py): what the command does is tested
    here, not its process."""
    return run_tipline(args, stdin=stdin)


def test_a_simulation_submitted_to_a_clearinghouse_matches_its_truth(
    tmp_path: Path, db_url: str
) -> None:
    truth_path, geo_path = tmp_path / "truth.jsonl", tmp_path / "sim.mmdb"
    with intake_server(db_url, tmp_path / "ch") as server:
        server.add_provider("esp-sim-a", "simulated-provider-a")
        server.add_provider("esp-sim-b", "simulated-provider-b")
        done = _tipline(
            "simulate", "--url", server.url, "--user", "esp-sim-a", "--user", "esp-sim-b",
            "--password-stdin", "--reports", "12", "--seed", "7", "--viral-bursts", "1",
            "--burst-reports", "4", "--truth", str(truth_path), "--geo-db", str(geo_path),
            stdin="simulated-provider-a\nsimulated-provider-b\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "submitted 12 report(s)" in done.stderr
        lines = [json.loads(line) for line in truth_path.read_text().splitlines()]
        head = lines[0]
        reports = [line for line in lines if line["kind"] == "report"]
        items = {line["item"]: line for line in lines if line["kind"] == "item"}
        assert head["reports"] == len(reports) == 12
        assert head["files"] == sum(len(r["files"]) for r in reports)
        assert sum(i["files"] for i in items.values()) == head["files"]
        assert sum(1 for r in reports if r["viral_item"]) == 4
        with server.sessions() as s:
            stored = {r.id: r for r in s.scalars(select(IntakeReportRow))}
            files = {f.id: f for f in s.scalars(select(IntakeFileRow))}
        assert set(stored) == {r["report_id"] for r in reports}
        assert all(r.status == "finished" for r in stored.values())
        assert len(files) == head["files"]
        for report in reports:
            for f in report["files"]:
                row = files[f["file_id"]]
                assert row.report_id == report["report_id"]
                assert (row.md5, row.sha256, row.size) == (f["md5"], f["sha256"], f["size"])
                assert row.media == f["media"], row.hash_error
                kinds = {s["type"] for s in row.signals}
                assert ("vpdq" in kinds) == (f["media"] == "video")

        # the geography written beside the truth routes every report to its account's place
        router = routing.Router(server.sessions, GeoDatabase(geo_path), RoutingTable())
        for report in reports:
            got = routing.route_report(router, report["report_id"], actor="test")
            assert (got.country, got.subdivision) == (report["country"], report["subdivision"])
            assert got.rule == "unrouted"  # the empty table routes nowhere, explicitly


def test_digests_given_by_the_caller_make_the_same_report_as_digests_computed_here() -> None:
    spec = sim.SimulationSpec(seed=5, reports=6, wallpapers=None, video_share=0.0)
    plan = sim.plan(spec)
    renderer = sim.Renderer(plan)
    for report in plan.reports:
        files = [(f, renderer.render(f)) for f in report.files]
        given = [sim.file_digests(data) for _, data in files]
        assert sim._content(plan, report, files, given) == sim._content(plan, report, files)
        computed = sim._content(plan, report, files)[1]
        assert [(f.md5, f.sha1) for f in computed] == [
            (simmedia.digest(data)["md5"], simmedia.digest(data)["sha1"]) for _, data in files
        ]
    with pytest.raises(InputError):
        sim._content(plan, plan.reports[0], files, [])
