"""The loop closed over real processes: a provider files a report with the
clearinghouse (`tipline serve --role clearinghouse`) through ISPWS, an analyst confirms
it as new material, the clearinghouse publishes its hash list as a signed feed, another
provider configures that feed with `tipline exchange`, syncs it, and a re-upload of the
material then matches at that provider's own `tipline serve`. Also the worker running a
sync asked for over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from _api_server import Server, running_server, server_on
from _cli import run_tipline
from _clock import HANG_SECONDS
from _intake_media import pictures, report_xml, variant
from tipline.config import Settings
from tipline.services import clearinghouse
from tipline.services.auth import create_key
from tipline.services.database import open_database
from tipline.services.vault import MasterKey
from tipline.services.vault.keys import write_key_file
from tipline.store.db import transaction

PUBLISHED = "clearinghouse-confirmed"


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` in this process (:mod:`_cli`): a fresh interpreter costs seconds
    of CPU on a loaded machine, and the process itself is not what these steps test."""
    return run_tipline(args, env={**os.environ, **env}, cwd=cwd)


def _process(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` as a process of its own (the worker: it installs signal handlers)."""
    return subprocess.run(
        [sys.executable, "-m", "tipline.cli.main", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )


def _code(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return ET.fromstring(answer.content).findtext("responseCode") or ""


def _file_and_confirm(ch: Server, picture: bytes) -> None:
    """A provider files a report with ``picture`` through ISPWS (plain HTTP); once the
    clearinghouse has triaged it, an analyst confirms it as new material (A1)."""
    db = open_database(ch.db_url, settings=Settings(data_dir=ch.data_dir, database_url=ch.db_url))
    try:
        clearinghouse.add_provider(db.sessions, "esp-loop", "esp-loop-password")
        with transaction(db.sessions) as s:
            analyst = create_key(s, name="analyst", role="analyst").secret
    finally:
        db.close()
    auth = ("esp-loop", "esp-loop-password")
    with httpx.Client(base_url=f"{ch.base_url}/ispws", auth=auth, timeout=HANG_SECONDS) as ispws:
        xml = report_xml()
        opened = ispws.post("/submit", content=xml, headers={"Content-Type": "text/xml"})
        assert _code(opened) == "0"
        rid = ET.fromstring(opened.content).findtext("reportId") or ""
        up = ispws.post("/upload", data={"id": rid}, files={"file": ("upload.jpg", picture)})
        assert _code(up) == "0"
        assert _code(ispws.post("/finish", data={"id": rid})) == "0"
    headers = {"Authorization": f"Bearer {analyst}"}
    with httpx.Client(base_url=ch.base_url, headers=headers, timeout=HANG_SECONDS) as api:
        deadline = time.monotonic() + HANG_SECONDS  # bounds a failure only
        while str(rid) not in {
            str(r["report_id"]) for r in api.get("/v1/clearinghouse/queue").json()
        }:
            assert time.monotonic() < deadline, "the report was never triaged"
            time.sleep(0.1)
        confirmed = api.post(
            f"/v1/clearinghouse/reports/{rid}/confirm", json={"classification": "A1"}
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["published"], confirmed.text


def test_confirmed_at_the_clearinghouse_then_caught_at_the_provider(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # The provider runs on SQLite: the loop over processes is what this tests (about 9 s
    # of CPU); a sync on PostgreSQL is test_exchanges.py's [postgres] (the same sync
    # service), a match over HTTP on PostgreSQL test_api_match.py's.
    backend = "sqlite"
    ch_dir = tmp_path / "ch"
    ch_dir.mkdir()
    ch_url = f"sqlite:///{ch_dir / 'tipline.db'}"
    picture = pictures(1)[0]
    keygen = _cli("exchange", "keygen", "--out", str(ch_dir / "feed.key"), env={}, cwd=ch_dir)
    assert keygen.returncode == 0, keygen.stderr
    public_key = keygen.stdout.strip()
    assert (ch_dir / "feed.key").stat().st_mode & 0o777 == 0o600
    vault_key = ch_dir / "master.key"
    write_key_file(vault_key, MasterKey.generate())
    ch_env = {
        "TIPLINE_FEED_SIGNING_KEY_FILE": str(ch_dir / "feed.key"),
        "TIPLINE_FEED_BANKS": f'["{PUBLISHED}"]',
        "TIPLINE_VAULT_MASTER_KEY_FILE": str(vault_key),
    }
    with (
        running_server(ch_url, ch_dir, env=ch_env, args=("--role", "clearinghouse")) as ch,
        server_on(backend, request, tmp_path / "provider") as provider,
    ):
        _file_and_confirm(ch, variant(picture, "base"))
        created = provider.client("curator").post("/v1/banks", json={"name": "from-ch"})
        assert created.status_code == 201, created.text
        env = {
            "TIPLINE_DATABASE_URL": provider.db_url,
            "TIPLINE_DATA_DIR": str(provider.data_dir),
            "CH_KEY": ch.keys["reviewer"],
        }
        added = _cli(
            "exchange", "add", "ch", "--kind", "tipline-feed", "--bank", "from-ch",
            "--url", f"{ch.base_url}/v1/feeds/{PUBLISHED}", "--public-key", public_key,
            "--credential-env", "CH_KEY", env=env, cwd=tmp_path,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        # before the sync, a re-upload (resized, re-encoded) is unknown at the provider
        upload = variant(picture, "small")
        before = provider.client("matcher").post("/v1/match", content=upload).json()
        assert before["matched"] is False
        synced = _cli("exchange", "sync", "ch", env=env, cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr
        assert '"added": 1' in synced.stdout
        assert ch.keys["reviewer"] not in synced.stdout + synced.stderr
        after = provider.client("matcher").post("/v1/match", content=upload).json()
        assert after["matched"] is True
        assert {(m["bank"], m["signal_type"]) for m in after["matches"]} == {("from-ch", "pdq")}

        # the status over HTTP; tenant keys see no exchanges
        listed = provider.client("admin").get("/v1/exchanges").json()
        assert [x["name"] for x in listed] == ["ch"]
        assert listed[0]["credential"] == "env:CH_KEY" and listed[0]["totals"]["added"] == 1
        assert provider.client("a_admin").get("/v1/exchanges").json() == []
        assert provider.client("a_admin").get("/v1/exchanges/ch").status_code == 404
        assert provider.client("matcher").post("/v1/exchanges/ch/sync").status_code == 403

        # a sync asked for over HTTP runs on a worker
        queued = provider.client("curator").post("/v1/exchanges/ch/sync")
        assert queued.status_code == 202, queued.text
        worker = _process(
            "worker", "--exit-when-idle", "--poll-interval", "0.1", env=env, cwd=tmp_path
        )
        assert worker.returncode == 0, worker.stderr
        status = provider.client("admin").get("/v1/exchanges/ch").json()
        assert status["totals"]["pages"] == 2 and status["last_error"] is None

        # a missing credential is one line and a non-zero exit
        broken = _cli("exchange", "sync", "ch", env={**env, "CH_KEY": ""}, cwd=tmp_path)
        assert broken.returncode == 2
        assert broken.stderr.strip().splitlines() == [
            "error: exchange 'ch': environment variable CH_KEY is unset"
        ]
