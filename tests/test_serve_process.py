"""``tipline serve`` as a real process: the embedded default (./tipline-data, SQLite),
``--demo`` (a match within the first minute), and two workers sharing metrics."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from _api_server import free_port, running_server
from _clock import HANG_SECONDS
from tipline.demo import sample_images


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HANG_SECONDS
    with httpx.Client(timeout=1, trust_env=False) as poll:  # one TLS context, not one a call
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited:\n{log.read_text()[-3000:]}")
            try:
                if poll.get(f"{base}/v1/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")


def _review_in_the_web_ui(base: str, log: str, file_name: str) -> None:
    """The demo's reviewer logs in and finds the match in the review queue."""
    found = re.search(r"review it at (\S+)/web as 'reviewer', password \(shown once\): (\S+)", log)
    assert found, log
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as web:
        page = web.get("/web/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token
        # the cookies are Secure (the default): httpx keeps them off plain HTTP, so they
        # are sent by hand here, as a browser does for a loopback address
        login_cookie = page.cookies["tipline_login"]
        answer = web.post(
            "/web/login",
            data={"login_token": token.group(1), "name": "reviewer", "password": found.group(2)},
            headers={"Cookie": f"tipline_login={login_cookie}"},
        )
        assert answer.status_code == 303, answer.text
        session = answer.cookies["tipline_session"]
        queue = web.get("/web/review", headers={"Cookie": f"tipline_session={session}"})
        assert queue.status_code == 200
        assert queue.text.count('class="item-link"') == 1, file_name


def test_demo_gives_a_match_out_of_the_box(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tipline.cli.main", "serve", "--demo", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, log)
        key = re.search(r"admin API key \(shown once\): (\S+)", log.read_text())
        assert key, log.read_text()
        assert (tmp_path / "tipline-data" / "tipline.db").is_file()
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        picture = sample_images()[0]
        resp = httpx.post(
            f"{base}/v1/match", content=picture.read_bytes(), headers=headers, timeout=30
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["matched"] is True
        assert {m["bank"] for m in body["matches"]} == {"demo"}
        assert picture.stem in {m["entry_id"] for m in body["matches"]}
        assert f"{base}/v1/match" in log.read_text()
        _review_in_the_web_ui(base, log.read_text(), picture.name)
    finally:
        process.terminate()
        process.wait(timeout=15)
    # A second start reuses the data folder and does not duplicate the bank.
    log2 = tmp_path / "serve2.log"
    port2 = free_port()
    with open(log2, "wb") as out:
        again = subprocess.Popen(
            [sys.executable, "-m", "tipline.cli.main", "serve", "--demo", "--port", str(port2)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port2}", again, log2)
        key2 = re.search(r"admin API key \(shown once\): (\S+)", log2.read_text())
        assert key2
        banks = httpx.get(
            f"http://127.0.0.1:{port2}/v1/banks",
            headers={"Authorization": f"Bearer {key2.group(1)}"},
        ).json()
        assert [(b["name"], b["entries"]) for b in banks] == [("demo", len(sample_images()))]
    finally:
        again.terminate()
        again.wait(timeout=15)


def _workers_of(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(process.pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:  # gone or not yet reaped
            continue
    return out


def _listens(worker: psutil.Process, port: int) -> bool:
    """True once ``worker`` has its own listening socket on ``port``."""
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
        for conn in worker.net_connections(kind="tcp")
    )


@pytest.mark.slow
def test_workers_each_accept_connections_and_are_restarted(tmp_path: Path) -> None:
    """Two workers (one server start: each costs seconds of CPU): each accepts
    connections, they share metrics, a dead one is replaced, stopping stops both."""
    with running_server(f"sqlite:///{tmp_path / 'tipline.db'}", tmp_path, workers=2) as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        workers = _workers_of(srv.process)
        assert len(workers) == 2
        # The kernel spreads connections only over sockets that listen already: under
        # load the server can answer while one worker is still starting (a soak run
        # saw {worker A: 0, worker B: 32}), so wait until each worker listens on the port.
        deadline = time.monotonic() + HANG_SECONDS
        while not all(_listens(w, port) for w in workers):
            assert time.monotonic() < deadline, "a worker never listened on the port"
            time.sleep(0.05)
        # A burst of keep-alive connections opened at once (as a load balancer's pool):
        # every worker gets some (one shared socket gave them all to one worker).
        # The time limit is only a failure bound (httpx's default 5 s is not).
        clients = [httpx.Client(base_url=srv.base_url, timeout=60) for _ in range(32)]
        try:
            for c in clients:
                assert c.get("/v1/health").status_code == 200
            per_worker = {
                w.pid: sum(
                    1
                    for conn in w.net_connections(kind="tcp")
                    if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
                )
                for w in workers
            }
        finally:
            for c in clients:
                c.close()
        assert sum(per_worker.values()) == 32 and min(per_worker.values()) > 0, per_worker
        # The workers share metrics: whichever answers /metrics shows the sum of both.
        c = srv.client("hasher")
        picture = sample_images()[1].read_bytes()
        for _ in range(20):
            assert c.post("/v1/hash", content=picture).status_code == 200
        text = srv.client(None).get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("tipline_media_hashed_total") and 'media="photo"' in line:
                total += float(line.rsplit(" ", 1)[1])
        assert total == 20.0, text
        assert (tmp_path / "prometheus").is_dir()
        # A worker that dies is replaced; the server keeps answering.
        workers[0].kill()
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline:
            now = _workers_of(srv.process)
            if len(now) == 2 and workers[0].pid not in {p.pid for p in now}:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the dead worker was not replaced")
        assert srv.client(None).get("/v1/health").status_code == 200
        survivors = _workers_of(srv.process)
    # stopping the server stops every worker
    _gone, alive = psutil.wait_procs(survivors, timeout=HANG_SECONDS)
    assert not alive
