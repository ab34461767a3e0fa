"""Where the clearinghouse serving process spends its CPU, thread by thread, for code
versions run alternately on the same photo stream: a same-moment A/B of the serving
process under a shared machine's load.

Each version is a ``label=path/to/src`` (e.g. ``git archive <commit> src | tar -x -C
/tmp/a``); its ``tipline serve --role clearinghouse`` (one worker, two hashing processes,
PostgreSQL, routing on) migrates a fresh schema itself, then four clients send the
``bench/clearinghouse.py`` photo stream (seed 11) after two warm-up reports. Timed until
every report is triaged. Printed per run: the serving process's CPU per file and its
split by thread group, read from ``/proc/<pid>/task`` (thread names from ``py-spy dump``):
the ISPWS calls (their own threads; AnyIO worker threads in older versions), the triage
thread, the event loop (HTTP) and the rest; the hashing processes are not in it.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/clearinghouse_threads.py [--reports 30] [--rounds 2] old=/tmp/a/src new=src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

import clearinghouse as ch  # noqa: E402
from _pgcpu import tagged  # noqa: E402
from clearinghouse_triage import database  # noqa: E402
from tipline.config import Settings  # noqa: E402
from tipline.services.clearinghouse import simulate as sim  # noqa: E402
from tipline.services.database import Database, open_database  # noqa: E402
from tipline.services.reports.client import IspwsClient  # noqa: E402
from tipline.services.vault import MasterKey  # noqa: E402
from tipline.services.vault.keys import write_key_file  # noqa: E402
from tipline.store.clearinghouse_triage import TriageRow  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native thread id (``py-spy dump``; empty without it)."""
    try:
        dump = subprocess.run(
            ["py-spy", "dump", "--pid", str(pid), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        return {int(t["os_thread_id"]): str(t["thread_name"]) for t in json.loads(dump)}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def group(name: str, tid: int, pid: int) -> str:
    if tid == pid:
        return "event loop"
    if name.startswith(("AnyIO", "tipline-ispws-call")):
        return "calls"
    if name.startswith("tipline-clearinghouse-triage"):
        return "triage"
    return "other"


@dataclass
class Served:
    """A version's server, ready for the stream: its process, database handle, one
    ISPWS client per provider and the warm-up reports already triaged."""

    proc: subprocess.Popen[bytes]
    db: Database
    http: dict[str, IspwsClient]
    warm: int
    stream: ch.Stream

    def send(self, number: int) -> None:
        """Submit report ``number`` of the stream, as its provider."""
        plan = self.stream.plan
        report = plan.reports[number]
        provider = plan.accounts[report.account].provider
        sim.submit_report(self.http[provider], plan, report, self.stream.files[number])

    def triaged(self) -> bool:
        """Whether every report sent so far (the whole stream) sits triaged."""
        with self.db.sessions() as s:
            done = int(s.scalar(select(func.count()).select_from(TriageRow)) or 0)
        return done >= len(self.stream.plan.reports) + self.warm


@contextmanager
def served(
    label: str, src: str, stream: ch.Stream, pg: str, root: Path, application: str | None = None
) -> Iterator[Served]:
    """Serve version ``src`` (one worker, two hashing processes, PostgreSQL on a fresh
    schema, routing on) until the block ends; ``application`` tags its PostgreSQL
    connections (bench/_pgcpu.py)."""
    folder = root / f"server-{label}-{time.time_ns()}"
    folder.mkdir(parents=True)
    with database(pg, folder) as url:
        key_file = folder / "master.key"
        write_key_file(key_file, MasterKey.generate())
        geo = sim.write_geo_database(stream.plan, folder / "geo.mmdb")
        env = {
            **os.environ,
            "TIPLINE_GEOIP_DATABASE": str(geo),
            "TIPLINE_ROUTING_TABLE": ch.routing_table(stream.plan).model_dump_json(),
            "TIPLINE_DATABASE_URL": tagged(url, application) if application else url,
            "TIPLINE_DATA_DIR": str(folder),
            "TIPLINE_VAULT_MASTER_KEY_FILE": str(key_file),
            "TIPLINE_ROLE": "clearinghouse",
            "TIPLINE_INTAKE_MAX_FILE_BYTES": str(16 << 20),
            "TIPLINE_INTAKE_HASH_PROCESSES": "2",
            "PYTHONPATH": src,
        }
        port = ch._free_port()
        main_code = "from tipline.cli.main import main; main()"
        serve = ["serve", "--role", "clearinghouse", "--port", str(port), "--log-level", "warning"]
        proc = subprocess.Popen([sys.executable, "-c", main_code, *serve], env=env)
        base = f"http://127.0.0.1:{port}"
        settings = Settings(database_url=url, data_dir=folder)  # type: ignore[call-arg]
        db = None
        http: dict[str, IspwsClient] = {}
        try:
            deadline = time.monotonic() + ch.HANG_SECONDS
            while True:  # the server migrates the schema itself (its own revision)
                if proc.poll() is not None:
                    raise SystemExit(f"{label}: tipline serve exited with {proc.returncode}")
                try:
                    if httpx.get(f"{base}/v1/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label}: no answer")
                time.sleep(0.2)
            db = open_database(settings=settings, migrate=False)
            # the accounts, added by the version's own code (its audit append)
            add = (
                "import json, sys\n"
                "from tipline.services import clearinghouse\n"
                "from tipline.services.database import open_database\n"
                "db = open_database(migrate=False)\n"
                "for name, password in json.loads(sys.argv[1]).items():\n"
                "    clearinghouse.add_provider(db.sessions, name, password)\n"
            )
            subprocess.run(
                [sys.executable, "-c", add, json.dumps(ch.PASSWORDS)], env=env, check=True
            )
            for name, password in ch.PASSWORDS.items():
                for _ in range(4):  # scrypt once, then remembered
                    httpx.get(f"{base}/ispws/status", auth=(name, password), timeout=60)
            http = {n: IspwsClient(f"{base}/ispws", n, pw) for n, pw in ch.PASSWORDS.items()}
            warm = ch.warm_up(http, stream.plan, 2, db)
            yield Served(proc, db, http, warm, stream)
        finally:
            for client in http.values():
                client.close()
            proc.terminate()
            proc.wait(timeout=60)
            if db is not None:
                db.close()


def run(label: str, src: str, stream: ch.Stream, pg: str, root: Path, clients: int) -> None:
    with served(label, src, stream, pg, root) as server:
        proc = server.proc
        before = thread_cpu(proc.pid)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(server.send, range(len(stream.plan.reports))))
        deadline = time.monotonic() + ch.HANG_SECONDS
        while not server.triaged() and time.monotonic() < deadline:
            time.sleep(0.05)
        wall = time.perf_counter() - start
        after = thread_cpu(proc.pid)
        names = thread_names(proc.pid)
    files = stream.count
    groups = dict.fromkeys(("calls", "triage", "event loop", "other"), 0.0)
    for tid, cpu in after.items():
        groups[group(names.get(tid, "?"), tid, proc.pid)] += cpu - before.get(tid, 0.0)
    total = sum(groups.values())
    parts = ", ".join(f"{k} {1000 * v / files:.1f}" for k, v in groups.items())
    print(
        f"{label:<10} serving process {1000 * total / files:5.1f} ms CPU/file ({parts}); "
        f"wall {wall:.1f} s; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("versions", nargs="+", help="label=path/to/src, run in turn")
    args = parser.parse_args()
    pg = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("set TIPLINE_TEST_POSTGRES_URL")
    versions = [v.partition("=")[::2] for v in args.versions]
    spec = ch.stream_spec(11, args.reports)
    with tempfile.TemporaryDirectory(prefix="tipline-chthreads-") as tmp:
        root = Path(tmp)
        stream = ch.render(spec, root / "files")
        print(f"{stream.count} photos in {len(stream.plan.reports)} reports", flush=True)
        for _ in range(args.rounds):
            for label, src in versions:
                run(label, str(Path(src).resolve()), stream, pg, root, args.clients)


if __name__ == "__main__":
    main()
