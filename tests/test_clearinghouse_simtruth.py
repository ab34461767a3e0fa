"""Clustering and triage against the simulator's ground truth: a ``tipline simulate``
stream (wallpaper quadrants and drawings, exact and transformed copies, short ffmpeg
videos, a viral burst, repeat accounts) submitted through ISPWS to a real clearinghouse
server, triaged by it, then compared pair by pair with the truth."""

from __future__ import annotations

import json
import time
from itertools import combinations
from pathlib import Path

import pytest
from sqlalchemy import select

from _clock import HANG_SECONDS
from _intake_server import intake_server
from tipline.services.clearinghouse import simulate as sim
from tipline.services.clearinghouse.dedup import DedupSettings, file_signals
from tipline.services.reports.client import IspwsClient
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.clearinghouse_triage import FileDedupRow, TriageRow

PASSWORDS = {"esp-sim-a": "simulated-provider-a", "esp-sim-b": "simulated-provider-b"}


def _pairs(groups: dict[str, str], files: list[str]) -> set[tuple[str, str]]:
    return {(x, y) for x, y in combinations(sorted(files), 2) if groups[x] == groups[y]}


class _KeptRenderer(sim.Renderer):
    """Renders each planned file once (its bytes and distance to the original kept):
    both backends are sent the same stream, made once (about half the CPU of a run)."""

    def __init__(self, plan: sim.Plan) -> None:
        super().__init__(plan)
        self._files: dict[sim.PlannedFile, bytes] = {}
        self._distances: dict[sim.PlannedFile, int | None] = {}

    def render(self, planned: sim.PlannedFile) -> bytes:
        if planned not in self._files:
            self._files[planned] = super().render(planned)
        return self._files[planned]

    def pdq_distance(self, planned: sim.PlannedFile, data: bytes) -> int | None:
        if planned not in self._distances:
            self._distances[planned] = super().pdq_distance(planned, data)
        return self._distances[planned]


@pytest.fixture(scope="module")
def stream() -> _KeptRenderer:
    spec = sim.SimulationSpec(
        seed=5,
        reports=20,
        providers=tuple(PASSWORDS),
        viral_bursts=1,
        burst_reports=6,
        video_side=192,
    )
    return _KeptRenderer(sim.plan(spec))


def test_clusters_and_triage_agree_with_the_simulators_truth(
    stream: _KeptRenderer, db_url: str, tmp_path: Path
) -> None:
    truth_path = tmp_path / "truth.jsonl"
    with intake_server(db_url, tmp_path / "ch", intake_max_file_bytes=4 << 20) as server:
        for name, password in PASSWORDS.items():
            server.add_provider(name, password)
        clients = {name: IspwsClient(server.url, name, pw) for name, pw in PASSWORDS.items()}
        try:
            with truth_path.open("w", encoding="utf-8") as truth:
                sim.run(stream.plan, clients, truth, renderer=stream)
        finally:
            for client in clients.values():
                client.close()
        lines = [json.loads(line) for line in truth_path.read_text().splitlines()]
        reports = [line for line in lines if line["kind"] == "report"]
        ids = [r["report_id"] for r in reports]
        deadline = time.monotonic() + HANG_SECONDS  # bounds a failure only
        while True:
            with server.sessions() as s:
                done = s.scalars(select(TriageRow.report_id).where(TriageRow.report_id.in_(ids)))
                if len(list(done)) == len(ids):
                    break
            assert time.monotonic() < deadline, "reports were not triaged"
            time.sleep(0.1)
        with server.sessions() as s:
            dedup = {r.file_id: r for r in s.scalars(select(FileDedupRow))}
            triage = {r.report_id: r for r in s.scalars(select(TriageRow))}
            rows = {r.id: r for r in s.scalars(select(IntakeFileRow))}
    floors = DedupSettings.of(server.settings)
    signals = {f: file_signals(row, floors) for f, row in rows.items()}
    item_of = {f["file_id"]: f["item"] for r in reports for f in r["files"]}
    cluster_of = {f: str(dedup[f].cluster_id) for f in item_of}
    files = list(item_of)
    same_truth, same_found = _pairs(item_of, files), _pairs(cluster_of, files)
    precision = len(same_truth & same_found) / max(1, len(same_found))
    recall = len(same_truth & same_found) / max(1, len(same_truth))
    # vPDQ never matches frames under its quality floor: such files (e.g. a flat
    # drawing's video) can only be de-duplicated by their digests
    usable = {f for f in files if any(x.type in ("pdq", "vpdq") for x in signals[f])}
    sha = {f: rows[f].sha256 for f in files}
    matchable = {(x, y) for x, y in same_truth if {x, y} <= usable or sha[x] == sha[y]}
    recall_matchable = len(matchable & same_found) / max(1, len(matchable))
    print(
        f"files={len(files)} same-item pairs={len(same_truth)} precision={precision:.4f} "
        f"recall={recall:.4f} recall of matchable pairs={recall_matchable:.4f}"
    )
    assert precision >= 0.999 and recall_matchable >= 0.98
    # the first file of each item (in finish order) is new, every later matchable one
    # is not
    seen: set[str] = set()
    seen_sha: set[str] = set()
    for report in sorted(reports, key=lambda r: r["report_id"]):
        for f in report["files"]:
            fid = f["file_id"]
            state = dedup[fid].state
            if f["item"] in seen and (fid in usable or sha[fid] in seen_sha):
                assert state == "seen", (f, state)
            elif f["item"] not in seen:
                assert state == "new", (f, state)
            seen.add(f["item"])
            seen_sha.add(sha[fid])
    # escalated reports, and only they, carry the factor
    for report in reports:
        names = {f["name"] for f in triage[report["report_id"]].factors}
        assert ("escalated" in names) == bool(report["escalate"])
