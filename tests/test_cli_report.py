"""``tipline report`` end to end, in-process through the console script's ``main``:
create from a decision, list, deliver to the local ISPWS receiver, show, download, and
one-line errors with exit status 2."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from _cli import run_tipline
from _ispws_server import ispws_server
from conftest import migrated_sqlite
from tipline.config import Settings
from tipline.services import vault as v
from tipline.services.reports.facts import ReviewFacts
from tipline.store import submissions as sub
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.models import import_all_models


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``tipline report ARGS`` in-process, through the console script's ``main``."""
    return run_tipline(["report", *args], env=env)


def test_report_commands(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings(
        data_dir=tmp_path,
        database_url=migrated_sqlite(tmp_path / "db.sqlite"),
        vault_master_key=key,
    )
    import_all_models()
    engine = make_engine(settings=settings)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        row = sub.create_submission(
            session,
            tenant=None,
            content_id="c-1",
            created_by="test",
            uploader_account="user-1",
            upload_ip="192.0.2.1",
            upload_port=5000,
            uploaded_at=datetime(2026, 11, 2, tzinfo=UTC),
        )
        v.store(
            session,
            v.Vault.from_settings(settings),
            b"benign",
            kind=v.EvidenceKind.MEDIA,
            actor="test",
            submission_id=row.id,
            filename="a.jpg",
        )
        decision = sub.add_decision(
            session,
            None,
            row.id,
            sub.DecisionKind.CONFIRMED,
            decided_by="rev",
            facts=ReviewFacts().as_json(),
        ).id
    engine.dispose()
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {
        **os.environ,
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TIPLINE_DATA_DIR": str(tmp_path),
        "TIPLINE_DATABASE_URL": settings.resolved_database_url(),
        "TIPLINE_VAULT_MASTER_KEY": key,
    }
    missing = _cli(env, "create", decision)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "error: set TIPLINE_REPORT_REPORTER_EMAIL (the reporting person's email)"
    ]
    env["TIPLINE_REPORT_REPORTER_EMAIL"] = "reports@example.org"
    created = _cli(env, "create", decision, "--json")
    assert created.returncode == 0, created.stderr
    report_id = json.loads(created.stdout)["id"]

    with ispws_server() as rx:
        env |= {
            "TIPLINE_REPORT_ISPWS_URL": rx.url,
            "TIPLINE_REPORT_ISPWS_USERNAME": rx.username,
            "TIPLINE_REPORT_ISPWS_PASSWORD": rx.password,
        }
        status = _cli(env, "status")
        assert status.returncode == 0 and "0 Server is up" in status.stdout
        delivered = _cli(env, "deliver", "--workers", "2")
        assert delivered.returncode == 0, delivered.stderr
        assert "finished 1, failed 0" in delivered.stderr
        assert rx.password not in delivered.stderr + delivered.stdout
    shown = _cli(env, "show", report_id)
    assert "finished" in shown.stdout and "NOT viewed" in shown.stdout
    out = tmp_path / "r.xml"
    assert _cli(env, "xml", report_id, "-o", str(out)).returncode == 0
    assert etree.fromstring(out.read_bytes()).tag == "report"
    refused = _cli(env, "retract", report_id)
    assert refused.returncode == 2 and "cannot be retracted" in refused.stderr
    listed = _cli(env, "list", "--status", "finished")
    assert listed.returncode == 0 and listed.stdout.startswith(report_id)


def _confirmed_decision(settings: Settings, content_id: str) -> str:
    engine = make_engine(settings=settings)
    try:
        with transaction(session_factory(engine)) as session:
            row = sub.create_submission(
                session,
                tenant=None,
                content_id=content_id,
                created_by="test",
                uploader_account="user-2",
                uploaded_at=datetime(2026, 11, 3, tzinfo=UTC),
            )
            v.store(
                session,
                v.Vault.from_settings(settings),
                b"benign " + content_id.encode(),
                kind=v.EvidenceKind.MEDIA,
                actor="test",
                submission_id=row.id,
                filename=f"{content_id}.jpg",
            )
            return sub.add_decision(
                session, None, row.id, sub.DecisionKind.CONFIRMED, decided_by="rev"
            ).id
    finally:
        engine.dispose()


def test_failed_report_retried_and_unfinished_one_retracted(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings(
        data_dir=tmp_path,
        database_url=migrated_sqlite(tmp_path / "db.sqlite"),
        vault_master_key=key,
    )
    import_all_models()
    engine = make_engine(settings=settings)
    upgrade(engine)
    engine.dispose()
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {
        **os.environ,
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TIPLINE_DATA_DIR": str(tmp_path),
        "TIPLINE_DATABASE_URL": settings.resolved_database_url(),
        "TIPLINE_VAULT_MASTER_KEY": key,
        "TIPLINE_REPORT_REPORTER_EMAIL": "reports@example.org",
    }
    failing = json.loads(_cli(env, "create", _confirmed_decision(settings, "a"), "--json").stdout)
    with ispws_server() as rx:
        env |= {
            "TIPLINE_REPORT_ISPWS_URL": rx.url,
            "TIPLINE_REPORT_ISPWS_USERNAME": rx.username,
            "TIPLINE_REPORT_ISPWS_PASSWORD": "not-the-password",
        }
        delivered = _cli(env, "deliver")
        assert "finished 0, failed 1" in delivered.stderr, delivered.stderr
        failed = _cli(env, "list", "--status", "failed")
        assert failed.stdout.split()[:2] == [failing["id"], "failed"]
        assert "authentication failed" in failed.stdout
        queue = _cli(env, "queue")
        assert queue.returncode == 0 and queue.stdout.split()[:2] == [failing["id"], "submit"]
        again = _cli(env, "retry", failing["id"])
        assert again.returncode == 0, again.stderr
        assert again.stdout.split()[1] == "queued" and "next submit" in again.stdout
        assert _cli(env, "queue").stdout == ""
        refused = _cli(env, "retry", failing["id"])
        assert refused.returncode == 2 and "only a failed one is retried" in refused.stderr
        # an unfinished report is withdrawn before anything is sent
        pending = json.loads(
            _cli(env, "create", _confirmed_decision(settings, "b"), "--json").stdout
        )
        retracted = _cli(env, "retract", pending["id"])
        assert retracted.returncode == 0 and retracted.stdout.split()[1] == "retracted"
        env["TIPLINE_REPORT_ISPWS_PASSWORD"] = rx.password
        assert "finished 1, failed 0" in _cli(env, "deliver").stderr
        assert list(rx.receiver.finished_by_ref()) == [failing["id"]]


def test_create_many_reports_per_batch_and_names_what_failed(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings(
        data_dir=tmp_path,
        database_url=migrated_sqlite(tmp_path / "db.sqlite"),
        vault_master_key=key,
    )
    import_all_models()
    engine = make_engine(settings=settings)
    upgrade(engine)
    engine.dispose()
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {
        **os.environ,
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TIPLINE_DATA_DIR": str(tmp_path),
        "TIPLINE_DATABASE_URL": settings.resolved_database_url(),
        "TIPLINE_VAULT_MASTER_KEY": key,
        "TIPLINE_REPORT_REPORTER_EMAIL": "reports@example.org",
    }
    decisions = [_confirmed_decision(settings, f"m{i}") for i in range(3)]
    listed = tmp_path / "ids.txt"
    listed.write_text(f"{decisions[2]}\n\n", encoding="utf-8")
    made = _cli(
        env, "create-many", decisions[0], "no-such-decision", decisions[1],
        "--from-file", str(listed), "--batch-size", "2", "--json",
    )  # fmt: skip
    assert made.returncode == 2
    assert made.stderr.strip().splitlines() == ["error: 1 of 4 decision(s) not reported"]
    lines = [json.loads(line) for line in made.stdout.splitlines()]
    assert [line["decision"] for line in lines] == [
        decisions[0], "no-such-decision", decisions[1], decisions[2]
    ]  # fmt: skip
    assert "no decision" in lines[1]["error"]
    assert {line.get("status") for line in lines} == {"queued", None}
    again = _cli(env, "create-many", *decisions)  # already made: the same reports
    assert again.returncode == 0, again.stderr
    assert [row.split()[0] for row in again.stdout.splitlines()] == [
        lines[i]["id"] for i in (0, 2, 3)
    ]
    empty = _cli(env, "create-many")
    assert empty.returncode == 2 and empty.stderr.strip() == "error: no decision ids given"
