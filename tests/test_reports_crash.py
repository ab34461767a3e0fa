"""The delivery outbox survives ``kill -9`` at any moment while the receiver fails 30%
of calls: 100 reports are each finished exactly once as the receiver sees it, every file
attached with its MD5, lost-answer orphans counted and never finished, the outbox empty.

Kill moments come from a seeded RNG over the child's step lines; the verdict depends
only on the final database and receiver state, never on timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import func, select

from _clock import HANG_SECONDS, LineWatch
from _ispws_server import Faults, ispws_server
from _report_fixtures import open_db, queue_reports
from tipline.services.reports.evidence import DirectoryEvidence
from tipline.services.reports.outbox import outbox_size
from tipline.store.reports import ReportFileRow, ReportRow

DRIVER = Path(__file__).parent / "_report_crash_driver.py"
REPORTS = 100
KILLS = 5


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


class _Children:
    """The driver process, which forks one delivering child per :meth:`run` (the
    delivery code imported once, not once per child); stopped on leaving the block."""

    def __init__(self, stderr: Path) -> None:
        self._stderr_path = stderr
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_child_env(),
            text=True,
        )
        self.watch = LineWatch(self.proc)  # a hung child dies with the driver
        self._lines = self.watch.lines()

    def run(self, args: list[str], kill_after: int | None) -> tuple[bool, int]:
        """Run a child; SIGKILL it after ``kill_after`` step lines. (killed?, lines)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        lines, done, code = 0, False, None
        pidfd: int | None = None
        try:
            for line in self._lines:
                if line.startswith("pid "):
                    pidfd = os.pidfd_open(int(line.split()[1]))
                elif line.startswith("step "):
                    lines += 1
                    if kill_after is not None and lines == kill_after and pidfd is not None:
                        with contextlib.suppress(ProcessLookupError):  # it had just finished
                            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                elif line.startswith("done "):
                    done = True
                elif line.startswith("exit "):
                    code = int(line.split()[1])
                    break
        finally:
            if pidfd is not None:
                os.close(pidfd)
        assert not self.watch.stalled, f"the driver printed nothing for {HANG_SECONDS:.0f} s: hung"
        assert code in (0, -signal.SIGKILL), self._stderr_path.read_text()[-3000:]
        assert code != 0 or done
        return code != 0, lines

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.watch.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the driver's loop ends
        try:
            self.proc.wait(timeout=HANG_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


@pytest.mark.slow
def test_kill_nine_during_faulty_delivery(db_url: str, tmp_path: Path) -> None:
    url = db_url
    engine, sessions = open_db(url)
    evidence = DirectoryEvidence(tmp_path / "ev")
    ids = queue_reports(sessions, evidence, REPORTS, max_files=2, file_bytes=1024, seed=3)
    rng = random.Random(20261129)
    faults = Faults(rate=0.3, seed=5, hold_seconds=1.0)
    kills = 0
    with ispws_server(faults=faults) as rx, _Children(tmp_path / "stderr.txt") as children:
        args = [url, str(tmp_path / "ev"), rx.url, rx.username, rx.password]
        for run_no in range(KILLS):
            killed, _ = children.run([*args, str(run_no)], rng.randint(10, 125))
            if not killed:
                break
            kills += 1
        killed, _ = children.run([*args, "999"], None)
        assert not killed
        receiver = rx.receiver
        finished = receiver.finished_by_ref()
        open_reports = receiver.open_reports()

    assert kills >= 3, "the children finished before being killed: raise REPORTS"
    assert sum(faults.counts.values()) > 100
    with sessions() as session:
        assert outbox_size(session) == 0
        statuses = session.execute(
            select(ReportRow.status, func.count()).group_by(ReportRow.status)
        ).all()
        assert dict(statuses) == {"finished": REPORTS}
        orphans = 0
        for report_id in ids:
            report = session.get(ReportRow, report_id)
            assert report is not None
            orphans += report.orphans
            remote = finished.get(report_id, [])
            assert len(remote) == 1, f"{report_id} finished {len(remote)} times"
            assert remote[0].finished == 1 and remote[0].id == report.remote_id
            files = session.scalars(
                select(ReportFileRow).where(ReportFileRow.report_id == report_id)
            ).all()
            assert sorted(f.md5 for f in remote[0].files.values()) == sorted(f.md5 for f in files)
            for f in files:
                got = remote[0].files[f.remote_file_id]
                assert got.md5 == f.md5 and got.details is not None
                assert etree.fromstring(got.details).findtext("fileId") == f.remote_file_id
    assert sum(len(v) for v in finished.values()) == REPORTS
    # every open report on the receiver is an orphan the client counted and never finished
    assert len(open_reports) <= orphans
    assert all(r.ref in set(ids) for r in open_reports)
    engine.dispose()
