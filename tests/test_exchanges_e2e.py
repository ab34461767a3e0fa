"""The loop closed over real processes: a clearinghouse (`tipline serve --role
clearinghouse`) publishes a bank as a signed feed; a provider configures it with
`tipline exchange`, syncs it, and a re-upload of the material then matches at the
provider's own `tipline serve`. Also the worker running a sync asked for over HTTP."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from _api_server import running_server, server_on
from tipline.config import Settings
from tipline.demo import sample_images
from tipline.services import bank_media, banks
from tipline.services.database import open_database


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tipline.cli.main", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _reencoded(path: Path) -> bytes:
    with Image.open(path) as im:
        small = im.convert("RGB").resize((im.width * 2 // 3, im.height * 2 // 3))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=75)
    return out.getvalue()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_confirmed_at_the_clearinghouse_then_caught_at_the_provider(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ch_dir = tmp_path / "ch"
    ch_dir.mkdir()
    ch_url = f"sqlite:///{ch_dir / 'tipline.db'}"
    picture = sample_images()[1]
    ch_db = open_database(ch_url, settings=Settings(data_dir=ch_dir, database_url=ch_url))
    try:
        banks.create_bank(ch_db, "CONFIRMED")
        bank_media.add_media_file(
            ch_db, "CONFIRMED", str(picture), entry_id="item-1", labels=["A1"]
        )
    finally:
        ch_db.close()
    keygen = _cli("exchange", "keygen", "--out", str(ch_dir / "feed.key"), env={}, cwd=ch_dir)
    assert keygen.returncode == 0, keygen.stderr
    public_key = keygen.stdout.strip()
    assert (ch_dir / "feed.key").stat().st_mode & 0o777 == 0o600
    ch_env = {
        "TIPLINE_FEED_SIGNING_KEY_FILE": str(ch_dir / "feed.key"),
        "TIPLINE_FEED_BANKS": '["CONFIRMED"]',
    }
    with (
        running_server(ch_url, ch_dir, env=ch_env, args=("--role", "clearinghouse")) as ch,
        server_on(backend, request, tmp_path / "provider") as provider,
    ):
        assert (
            provider.client("curator").post("/v1/banks", json={"name": "from-ch"}).status_code
            == 201
        )
        env = {
            "TIPLINE_DATABASE_URL": provider.db_url,
            "TIPLINE_DATA_DIR": str(provider.data_dir),
            "CH_KEY": ch.keys["reviewer"],
        }
        added = _cli(
            "exchange", "add", "ch", "--kind", "tipline-feed", "--bank", "from-ch",
            "--url", f"{ch.base_url}/v1/feeds/CONFIRMED", "--public-key", public_key,
            "--credential-env", "CH_KEY", env=env, cwd=tmp_path,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        # before the sync, the re-upload is unknown at the provider
        upload = _reencoded(picture)
        before = provider.client("matcher").post("/v1/match", content=upload).json()
        assert before["matched"] is False
        synced = _cli("exchange", "sync", "ch", env=env, cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr
        assert '"added": 1' in synced.stdout
        assert ch.keys["reviewer"] not in synced.stdout + synced.stderr
        after = provider.client("matcher").post("/v1/match", content=upload).json()
        assert after["matched"] is True
        assert {(m["bank"], m["entry_id"]) for m in after["matches"]} == {("from-ch", "item-1")}

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
        worker = _cli("worker", "--exit-when-idle", "--poll-interval", "0.1", env=env, cwd=tmp_path)
        assert worker.returncode == 0, worker.stderr
        status = provider.client("admin").get("/v1/exchanges/ch").json()
        assert status["totals"]["pages"] == 2 and status["last_error"] is None

        # a missing credential is one line and a non-zero exit
        broken = _cli("exchange", "sync", "ch", env={**env, "CH_KEY": ""}, cwd=tmp_path)
        assert broken.returncode == 2
        assert broken.stderr.strip().splitlines() == [
            "error: exchange 'ch': environment variable CH_KEY is unset"
        ]
