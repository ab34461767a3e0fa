"""De-duplication, clusters, known-versus-new, report links and triage of finished
intake reports, on SQLite and PostgreSQL.

Pictures are benign wallpapers and their transforms (``_intake_media``), so the truth of
which files are "the same picture" is known; "known material" is a picture whose hash
was put in a bank.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy import select

from _cli import run_tipline
from _clock import HANG_SECONDS
from _intake_media import (
    VARIANTS,
    bits,
    file_details_xml,
    pdq_of,
    pictures,
    report_xml,
    variant,
)
from _intake_server import intake_server
from _report_fixtures import open_db
from test_api_store import _names
from tipline.config import Settings
from tipline.services import banks, clearinghouse, jobs, vault
from tipline.services.audit import verify
from tipline.services.clearinghouse import Triager, dedup, triage_report
from tipline.services.clearinghouse.dedup import FILES_BANK
from tipline.services.database import Database
from tipline.services.matching import Matcher
from tipline.services.vault import MasterKey
from tipline.store.audit import AuditRecord
from tipline.store.bank_tables import BankRow
from tipline.store.base import Base
from tipline.store.clearinghouse_triage import FileDedupRow, FileLinkRow, TriageRow
from tipline.store.jobs import Job

PASSWORDS = {"esp-a": "password-of-esp-a", "esp-b": "password-of-esp-b"}


def auth(name: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{PASSWORDS[name]}".encode()).decode()


@dataclass
class Env:
    db: Database
    intake: clearinghouse.Intake
    triager: Triager

    def file(
        self,
        provider: str,
        files: list[bytes],
        *,
        xml: bytes | None = None,
        details: dict[int, dict[str, object]] | None = None,
    ) -> tuple[int, list[str]]:
        """Submit, upload, describe and finish a report; (report id, file ids)."""
        opened = clearinghouse.submit(self.intake, auth(provider), xml or report_xml())
        assert opened.ok, opened.description
        rid = str(opened.report_id)
        ids: list[str] = []
        for n, data in enumerate(files):
            up = clearinghouse.upload(
                self.intake, auth(provider), rid, f"f{n}.jpg", io.BytesIO(data)
            )
            assert up.ok, up.description
            assert up.file_id is not None
            ids.append(up.file_id)
            if details and n in details:
                doc = file_details_xml(int(rid), up.file_id, **details[n])  # type: ignore[arg-type]
                info = clearinghouse.fileinfo(self.intake, auth(provider), doc)
                assert info.ok, info.description
        done = clearinghouse.finish(self.intake, auth(provider), rid)
        assert done.ok
        return int(rid), ids

    def triaged(self, *args: object, **kwargs: object) -> tuple[int, list[str]]:
        rid, ids = self.file(*args, **kwargs)  # type: ignore[arg-type]
        assert triage_report(self.triager, rid) is not None
        return rid, ids

    def dedup(self, file_id: str) -> FileDedupRow:
        with self.db.sessions() as s:
            row = s.get(FileDedupRow, file_id)
            assert row is not None
            return row

    def triage(self, report_id: int) -> TriageRow:
        with self.db.sessions() as s:
            row = s.get(TriageRow, report_id)
            assert row is not None
            return row


def _settings(tmp_path: Path, db_url: str, **overrides: object) -> Settings:
    key = SecretStr(MasterKey.generate().to_base64())
    return Settings(  # type: ignore[arg-type]
        data_dir=tmp_path, database_url=db_url, vault_master_key=key, **overrides
    )


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    yield from _env(db_url, tmp_path)


def _env(db_url: str, tmp_path: Path, **overrides: object) -> Iterator[Env]:
    engine, sessions = open_db(db_url)
    for name, password in PASSWORDS.items():
        clearinghouse.add_provider(sessions, name, password)
    settings = _settings(tmp_path, db_url, **overrides)
    db = Database(engine, sessions, db_url)
    intake = clearinghouse.Intake(
        sessions=sessions, vault=vault.Vault.from_settings(settings), max_file_bytes=1 << 20
    )
    triager = Triager.open(db, settings)
    try:
        yield Env(db, intake, triager)
    finally:
        triager.close()
        engine.dispose()


def test_exact_and_perceptual_copies_cluster_with_explained_links(env: Env) -> None:
    a, b = pictures(2)
    base = variant(a, "base")
    r1, (f1,) = env.triaged("esp-a", [base])
    r2, (f2, f3) = env.triaged("esp-b", [base, variant(a, "small")])
    r3, (f4,) = env.triaged("esp-a", [variant(b, "base")])
    first, exact, small, other = (env.dedup(f) for f in (f1, f2, f3, f4))
    assert first.state == "new" and first.indexed
    assert exact.state == small.state == "seen"
    assert exact.cluster_id == small.cluster_id == first.cluster_id
    assert other.state == "new" and other.cluster_id != first.cluster_id
    assert not exact.indexed  # an exact copy of an indexed file is represented by it
    with env.db.sessions() as s:
        links = {
            (r.file_id, r.other_file_id): (r.signal, r.distance)
            for r in s.scalars(select(FileLinkRow))
        }
    assert links[(f2, f1)] == ("sha256", 0)
    signal, distance = links[(f3, f1)]
    assert signal == "pdq" and distance == bits(pdq_of(base), pdq_of(variant(a, "small")))
    assert env.triage(r1).new_files == 1 and env.triage(r2).new_files == 0
    assert env.triage(r3).new_files == 1


def test_known_material_is_known_and_never_new(env: Env) -> None:
    a, b = pictures(2)
    banks.create_bank(env.db, "ncmec-like")
    banks.add_entry(env.db, "ncmec-like", [f"pdq:{pdq_of(variant(a, 'base'))}"], labels=["A1"])
    rid, (known, fresh) = env.triaged("esp-a", [variant(a, "bright"), variant(b, "base")])
    row = env.dedup(known)
    assert row.state == "known"
    (hit,) = row.known
    assert hit["bank"] == "ncmec-like" and hit["signal"] == "pdq" and hit["labels"] == ["A1"]
    assert env.dedup(fresh).state == "new"
    factors = {f["name"]: f for f in env.triage(rid).factors}
    assert factors["classification.A1"]["detail"].endswith("(a known hash list entry)")
    assert "new_material" in factors and "known_material" in factors


def test_a_report_triaged_after_a_publish_sees_the_published_hashes(env: Env) -> None:
    """The triager's Matcher takes its own files without reading them back and skips
    its reads while the change marks stand still; hashes published in other
    transactions between two reports (a new bank, then a new entry in it) still count."""
    a, b, c = pictures(3)
    env.triaged("esp-a", [variant(a, "base")])
    assert env.triager.matcher.refresh(force=True) == 0  # its own file was taken at commit
    banks.create_bank(env.db, "published")
    banks.add_entry(env.db, "published", [f"pdq:{pdq_of(variant(b, 'base'))}"], labels=["A2"])
    _, (known,) = env.triaged("esp-b", [variant(b, "bright")])
    assert env.dedup(known).state == "known"
    banks.add_entry(env.db, "published", [f"pdq:{pdq_of(variant(c, 'base'))}"])
    _, (later, seen) = env.triaged("esp-a", [variant(c, "small"), variant(a, "bright")])
    assert env.dedup(later).state == "known" and env.dedup(seen).state == "seen"
    with env.db.sessions() as s:  # each report's crash-safe job settled as it was triaged
        settled = s.scalars(select(Job).where(Job.kind == "clearinghouse.triage")).all()
        assert [(j.status, j.attempts or 0) for j in settled] == [("done", 0)] * 3
    # the twin: a Matcher that read everything from the database finds the same
    twin = Matcher(env.db, env.triager.matcher.dir / "twin", poll_interval=0, system_banks=True)
    try:
        for p in (a, b, c):
            for name in ("base", "bright", "small"):
                q = pdq_of(variant(p, name))
                assert env.triager.matcher.match_hash("pdq", q) == twin.match_hash("pdq", q)
    finally:
        twin.close()


def test_clusters_match_the_ground_truth(env: Env) -> None:
    chosen = pictures(6)
    rng = random.Random(11)
    truth: dict[str, int] = {}
    for n in range(14):
        drawn = [(rng.choice(chosen), rng.choice(VARIANTS)) for _ in range(rng.randint(1, 3))]
        _rid, ids = env.triaged("esp-a" if n % 2 else "esp-b", [variant(p, v) for p, v in drawn])
        truth.update(zip(ids, (p for p, _ in drawn), strict=True))
    found = {f: env.dedup(f).cluster_id for f in truth}
    files = sorted(truth)
    pairs = [(x, y) for i, x in enumerate(files) for y in files[i + 1 :]]
    same_truth = {(x, y) for x, y in pairs if truth[x] == truth[y]}
    same_found = {(x, y) for x, y in pairs if found[x] == found[y]}
    assert same_found == same_truth  # precision and recall 1 on these pictures
    # every file but a cluster's first is explained by a link inside its cluster
    with env.db.sessions() as s:
        linked = {r.file_id: r.other_file_id for r in s.scalars(select(FileLinkRow))}
    firsts: dict[int, str] = {}
    for f in truth:  # upload order
        firsts.setdefault(found[f], f)
    for f in files:
        if f in firsts.values():
            assert f not in linked
        else:
            assert found[linked[f]] == found[f]


def test_clusters_merge_when_a_file_bridges_them(db_url: str, tmp_path: Path) -> None:
    # a tight PDQ distance makes the two transforms separate clusters until a file within
    # reach of both arrives
    found = None
    for p in pictures(8):
        hashes = {v: pdq_of(variant(p, v)) for v in VARIANTS}
        for one, two in itertools.combinations(VARIANTS[1:], 2):
            reach = max(bits(hashes["base"], hashes[one]), bits(hashes["base"], hashes[two]))
            if bits(hashes[one], hashes[two]) > reach:
                found = (p, one, two, reach)
                break
        if found:
            break
    else:
        pytest.skip("no picture has two transforms further apart than from the original")
    p, one, two, reach = found
    small, base, gray = variant(p, one), variant(p, "base"), variant(p, two)
    for env in _env(
        db_url, tmp_path, clearinghouse_pdq_distance=reach, clearinghouse_near_copy_bits=0
    ):
        _, (f_small,) = env.triaged("esp-a", [small])
        _, (f_gray,) = env.triaged("esp-b", [gray])
        assert env.dedup(f_small).cluster_id != env.dedup(f_gray).cluster_id
        _, (f_base,) = env.triaged("esp-a", [base])
        clusters = {env.dedup(f).cluster_id for f in (f_small, f_gray, f_base)}
        assert len(clusters) == 1


def test_reports_link_by_shared_identifiers(env: Env) -> None:
    (p,) = pictures(1)
    img = [variant(p, "base")]
    r1, _ = env.triaged(
        "esp-a",
        img,
        xml=report_xml(esp_id="u-77", emails=("Someone@Example.org",), ips=(("8.8.4.4", False),)),
    )
    r2, _ = env.triaged("esp-b", img, xml=report_xml(emails=("someone@example.org ",)))
    r3, _ = env.triaged("esp-b", img, xml=report_xml(esp_id="u-77"))  # other provider's id
    r4, _ = env.triaged("esp-a", img, xml=report_xml(esp_id="u-77", ips=(("10.1.2.3", False),)))
    r5, _ = env.triaged("esp-b", img, xml=report_xml(ips=(("8.8.4.4", True),)))  # a proxy
    r6, _ = env.triaged(
        "esp-b",
        img,
        xml=report_xml(devices=(("IMEI", "3567 01"),), ips=(("::ffff:8.8.4.4", False),)),
    )
    with env.db.sessions() as s:
        from tipline.services.clearinghouse import links

        got = {r: set(links.linked(s, r)) for r in (r1, r2, r3, r4, r5, r6)}
        # the grouped count the link factor's refresh uses agrees with the lists
        counted = links.counts(s, [r1, r2, r3, r4, r5, r6, 999_999])
        # what triage found as it recorded each report's identifiers (one statement on
        # PostgreSQL) is what links.linked reads now of the reports before it
        at_triage = {
            int(a.target_id): json.loads(a.details)["linked_reports"]
            for a in s.scalars(
                select(AuditRecord).where(AuditRecord.action == "clearinghouse.triage")
            )
        }
    assert at_triage == {r: sorted(x for x in found if x < r) for r, found in got.items()}
    assert counted == {**{r: len(found) for r, found in got.items()}, 999_999: 0}
    # every earlier report's link factor was brought up to date as later ones came
    assert {r: env.triage(r).linked_reports for r in got} == {r: counted[r] for r in got}
    assert got[r1] == {r2, r4, r6}
    assert got[r3] == set() and got[r5] == set()
    assert env.triage(r2).linked_reports == 1
    # a later report sharing an identifier refreshes the link factor of a pending one
    assert env.triage(r1).linked_reports == 3
    factors = {f["name"]: f for f in env.triage(r1).factors}
    assert factors["linked_reports"]["detail"].startswith("3 other reports")


def test_triage_scores_explain_themselves_and_order_the_queue(db_url: str, tmp_path: Path) -> None:
    a, b, c, d = pictures(4)
    weights = {"escalated": 500.0}
    for env in _env(db_url, tmp_path, triage_weights=weights):
        batched, _ = env.triaged("esp-a", [variant(a, "base")], xml=report_xml(batched=True))
        urgent, _ = env.triaged(
            "esp-b",
            [variant(b, "base")],
            xml=report_xml(
                incident="Online Enticement of Children for Sexual Acts",
                escalate="child in danger now",
                annotations=("sextortion",),
            ),
            details={0: {"classification": "A2", "annotations": ("liveStreaming", "infant")}},
        )
        repeat, _ = env.triaged("esp-a", [variant(a, "small")])
        plain, _ = env.triaged("esp-b", [variant(c, "base"), variant(d, "base")])
        factors = {f["name"]: f for f in env.triage(urgent).factors}
        assert factors["escalated"]["weight"] == 500.0
        assert factors["escalated"]["detail"].endswith("child in danger now")
        for name in (
            "new_material",
            "classification.A2",
            "incident.online_enticement",
            "report.sextortion",
            "file.liveStreaming",
            "file.infant",
        ):
            assert factors[name]["points"] == factors[name]["weight"] > 0
        assert env.triage(urgent).score == pytest.approx(
            sum(f["points"] for f in env.triage(urgent).factors)
        )
        assert "recency" in factors and 0 < factors["recency"]["value"] < 1
        assert {f["name"] for f in env.triage(batched).factors} >= {"batched", "new_material"}
        assert "new_material" not in {f["name"] for f in env.triage(repeat).factors}
        scores = {r: env.triage(r).score for r in (batched, urgent, repeat, plain)}
        assert scores[urgent] > scores[plain] > scores[repeat] > scores[batched]


def test_finish_queues_a_crash_safe_job_that_a_runner_completes(env: Env) -> None:
    (p,) = pictures(1)
    rid, (fid,) = env.file("esp-a", [variant(p, "base")])
    with env.db.sessions() as s:
        job = s.scalar(select(Job).where(Job.kind == "clearinghouse.triage"))
        assert job is not None and job.status == "pending"
    runner = jobs.JobRunner(
        env.db.engine, {"clearinghouse.triage": clearinghouse.triage_handler(lambda: env.triager)}
    )
    assert runner.run_once() == 1
    assert env.dedup(fid).state == "new" and env.triage(rid).status == "pending"
    assert triage_report(env.triager, rid) is None  # idempotent
    with env.db.sessions() as s:
        job = s.scalar(select(Job).where(Job.kind == "clearinghouse.triage"))
        assert job is not None and job.status == "done"
        actions = list(
            s.scalars(select(AuditRecord.action).where(AuditRecord.target_id == str(rid)))
        )
    assert actions.count("clearinghouse.triage") == 1


def test_files_bank_stays_out_of_provider_matching(env: Env) -> None:
    (p,) = pictures(1)
    env.triaged("esp-a", [variant(p, "base")])
    provider = Matcher(env.db, env.triager.matcher.dir, poll_interval=0.0)
    try:
        assert provider.match_hash("pdq", pdq_of(variant(p, "base"))) == []
        assert FILES_BANK not in provider.searched_banks()
    finally:
        provider.close()
    env.triager.matcher.refresh(force=True)
    assert env.triager.matcher.match_hash("pdq", pdq_of(variant(p, "base")))[0].bank == FILES_BANK
    with pytest.raises(Exception, match="reserved"):
        banks.create_bank(env.db, "system:mine")


def test_files_bank_id_is_taken_again_only_while_the_matcher_sees_it(env: Env) -> None:
    """The triager keeps the files bank's id: never one of a bank whose creation rolled
    back, and the thresholds still follow the settings."""
    matcher, wanted = env.triager.matcher, env.triager.dedup

    def stored() -> tuple[int, dict[str, int]]:
        with env.db.sessions() as s:
            row = s.scalars(select(BankRow).where(BankRow.name == FILES_BANK)).one()
            return int(row.id), {k: int(v) for k, v in (row.thresholds or {}).items()}

    with env.db.sessions() as s:  # created, then rolled back
        lost = dedup.files_bank(s, wanted, matcher=matcher)
        s.rollback()
    matcher.refresh(force=True)
    with env.db.sessions.begin() as s:
        first = dedup.files_bank(s, wanted, matcher=matcher, known=lost)
    assert (first, stored()[1]) == (stored()[0], {"pdq": 31, "vpdq": 20})
    matcher.refresh(force=True)
    with env.db.sessions.begin() as s:  # seen with these thresholds: no query needed
        assert dedup.files_bank(s, wanted, matcher=matcher, known=first) == first
    closer = replace(wanted, pdq_distance=20)
    with env.db.sessions.begin() as s:  # other thresholds: read and brought in line
        assert dedup.files_bank(s, closer, matcher=matcher, known=first) == first
    assert stored() == (first, {"pdq": 20, "vpdq": 20})
    (p,) = pictures(1)  # and triage still works on top of it all
    env.triaged("esp-a", [variant(p, "base")])


def _wait_for(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until true; the deadline only bounds a failure, never decides."""
    deadline = time.monotonic() + HANG_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_http_finish_triages_the_report_in_the_serving_process(db_url: str, tmp_path: Path) -> None:
    a, b = pictures(2)
    with intake_server(db_url, tmp_path / "ch", intake_max_file_bytes=1 << 20) as srv:
        for name, password in PASSWORDS.items():
            srv.add_provider(name, password)
        finished: list[int] = []
        for provider, data in (("esp-a", variant(a, "base")), ("esp-b", variant(a, "recoded"))):
            with httpx.Client(
                base_url=srv.url,
                auth=(provider, PASSWORDS[provider]),
                timeout=HANG_SECONDS,
                trust_env=False,
            ) as http:
                body = report_xml(emails=("same@example.org",))
                opened = http.post("/submit", content=body, headers={"Content-Type": "text/xml"})
                rid = int(ET.fromstring(opened.content).findtext("reportId") or "")
                for n, data_ in enumerate((data, variant(b, "small"))):
                    up = http.post(
                        "/upload", data={"id": str(rid)}, files={"file": (f"{n}.jpg", data_)}
                    )
                    assert ET.fromstring(up.content).findtext("responseCode") == "0"
                done = http.post("/finish", data={"id": str(rid)})
                assert ET.fromstring(done.content).findtext("responseCode") == "0"
                finished.append(rid)

        def triaged() -> bool:
            with srv.sessions() as s:
                return all(s.get(TriageRow, r) is not None for r in finished)

        _wait_for(triaged, "both reports triaged")
        with srv.sessions() as s:
            first, second = (s.get(TriageRow, r) for r in finished)
            assert first is not None and second is not None
            assert (first.new_files, second.new_files) == (2, 0)
            assert second.linked_reports == 1
            states = {
                r.state
                for r in s.scalars(
                    select(FileDedupRow).where(FileDedupRow.report_id == finished[1])
                )
            }
            assert states == {"seen"}
            # the serving process did the work: the crash-safe jobs were settled, not run
            statuses = {
                j.status for j in s.scalars(select(Job).where(Job.kind == "clearinghouse.triage"))
            }
            assert statuses == {"done"}
            assert all(
                (j.attempts or 0) == 0
                for j in s.scalars(select(Job).where(Job.kind == "clearinghouse.triage"))
            )
            assert verify(s).ok


def test_migration_matches_models(db_url: str) -> None:
    engine, _ = open_db(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    ours = {
        "clearinghouse_state",
        "intake_clusters",
        "intake_file_dedup",
        "intake_file_links",
        "intake_report_identifiers",
        "intake_triage",
    }
    assert [d for d in diff if ours & set(_names(d))] == []


def test_tipline_worker_triages_a_report_its_server_died_before(env: Env, tmp_path: Path) -> None:
    (p,) = pictures(1)
    lost: list[int] = []
    env.intake.on_finish = lost.append  # "the serving process died before triaging it"
    env.intake.triage_grace_seconds = 0.0
    rid, (fid,) = env.file("esp-a", [variant(p, "base")])
    assert lost == [rid]
    with env.db.sessions() as s:
        assert s.get(TriageRow, rid) is None
    full = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    full.update(TIPLINE_DATABASE_URL=str(env.db.url), TIPLINE_DATA_DIR=str(tmp_path / "worker"))
    # the worker command in this process (the worker as a process: test_reports_worker.py)
    proc = run_tipline(["worker", "--exit-when-idle"], env=full)
    assert proc.returncode == 0, proc.stderr
    assert env.triage(rid).new_files == 1 and env.dedup(fid).state == "new"


def test_two_triagers_racing_never_split_a_cluster(env: Env, tmp_path: Path) -> None:
    # two "processes" (own Matchers and index folders) triage at once: the de-dup lock
    # makes each see every file finished before it, so a picture is new exactly once
    (p,) = pictures(1)
    reports = [
        env.file("esp-a" if n % 2 else "esp-b", [variant(p, v)])
        for n, v in enumerate(("base", "small", "bright", "recoded", "gray", "blur"))
    ]
    other = Triager.open(env.db, _settings(tmp_path / "other", str(env.db.url)))
    try:
        halves = [reports[0::2], reports[1::2]]
        errors: list[BaseException] = []

        def work(triager: Triager, mine: list[tuple[int, list[str]]]) -> None:
            try:
                for rid, _ in mine:
                    triage_report(triager, rid)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(t, h))
            for t, h in zip((env.triager, other), halves, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    finally:
        other.close()
    rows = [env.dedup(ids[0]) for _, ids in reports]
    assert len({r.cluster_id for r in rows}) == 1
    assert sorted(r.state for r in rows) == ["new"] + ["seen"] * 5
