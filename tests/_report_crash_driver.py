"""Child process of test_reports_crash: delivers the outbox, printing one line per
step-log change so the parent can SIGKILL it at chosen moments.

usage: python _report_crash_driver.py DB_URL EVIDENCE_DIR URL USER PASSWORD SEED
(the password comes from the environment in real use; a test account here)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _report_fixtures import deliverer, open_db, run


def main() -> None:
    db_url, evidence_dir, url, user, password, seed = sys.argv[1:7]
    engine, sessions = open_db(db_url, migrate=False)  # the parent migrated

    def on_step(report_id: str, step: str, phase: str) -> None:
        sys.stdout.write(f"step {step} {phase}\n")
        sys.stdout.flush()

    d = deliverer(
        sessions,
        Path(evidence_dir),
        url,
        user,
        password,
        timeout=0.2,
        on_step=on_step,
        seed=int(seed),
    )
    stats = run(d, workers=8)
    sys.stdout.write(
        "done " + json.dumps({"finished": stats.finished, "orphans": stats.orphans}) + "\n"
    )
    sys.stdout.flush()
    engine.dispose()


if __name__ == "__main__":
    main()
