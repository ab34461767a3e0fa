"""CPU seconds of the PostgreSQL backends that serve one bench run's connections.

Work a bench's server hands to PostgreSQL (a statement, a stored function, a hash computed
in SQL) is part of what the server costs, so a bench that compares CPU per item counts it.
The backends are found by the ``application_name`` their connections carry and read from
``/proc`` (a local server only). Not counted: PostgreSQL's shared processes (WAL writer,
checkpointer), which serve every session on the machine, and backends that closed between
two samples.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


def tagged(url: str, application: str) -> str:
    """``url`` with ``application_name`` set, so its backends can be found."""
    return (
        make_url(url)
        .update_query_dict({"application_name": application})
        .render_as_string(hide_password=False)
    )


class Backends:
    """Samples of the CPU seconds of the backends whose connections carry ``application``."""

    def __init__(self, admin_url: str | None, application: str) -> None:
        self.application = application
        self.engine = create_engine(admin_url, poolclass=NullPool) if admin_url else None

    def sample(self) -> dict[int, float]:
        """CPU seconds per backend pid, now."""
        if self.engine is None:
            return {}
        with self.engine.connect() as conn:
            pids = list(
                conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                    {"a": self.application},
                ).scalars()
            )
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[int, float] = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # closed since the query
            out[int(pid)] = (int(fields[11]) + int(fields[12])) / tick
        return out

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two samples (a backend that opened in between from zero)."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
