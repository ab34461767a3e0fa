"""Two versions of the clearinghouse intake served side by side and sent the same reports
in the same moments: a same-moment A/B of the intake's whole CPU per photo on a machine
whose speed drifts (runs taken in turn differ by 10-20% here between minutes).

Each version is a ``label=path/to/src`` (e.g. ``git archive <commit> src | tar -x -C
/tmp/a``), served as ``bench/clearinghouse_threads.py`` serves it (one worker, two
hashing processes, PostgreSQL on a fresh schema, routing on), both at once. Each client
thread sends a report to one version and then the same report to the other (which goes
first alternates), so both take the same stream under the same load. Timed until both
have triaged every report. Printed per round and version, CPU ms per photo: the serving
process, its hashing processes and its PostgreSQL backends (found by the
``application_name`` of its connections), their sum, and the second version's sum over
the first's. The machine runs both servers at once, so each figure is higher than in a
run of one server alone; the comparison is what this bench is for.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/clearinghouse_pair.py [--reports 60] [--rounds 3] old=/tmp/a/src new=src
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
sys.path.insert(0, str(BENCH_DIR))

import psutil  # noqa: E402

import clearinghouse as ch  # noqa: E402
from _pgcpu import Backends  # noqa: E402
from clearinghouse_threads import Served, served  # noqa: E402


def _cpu(server: Served, backends: Backends) -> tuple[float, float, float]:
    """CPU seconds so far: serving process, its hashing processes, its backends."""
    proc = psutil.Process(server.proc.pid)
    own = ch._process_cpu(proc)
    return own, ch._tree_cpu(proc) - own, sum(backends.sample().values())


def one_round(
    versions: list[tuple[str, str]], stream: ch.Stream, pg: str, root: Path, clients: int
) -> list[tuple[str, list[float]]]:
    """Serve both versions, send the stream to both; CPU ms per photo of each."""
    with ExitStack() as stack:
        servers = []
        for label, src in versions:
            app = f"tipline-chpair-{label}"[:60]
            server = stack.enter_context(served(label, src, stream, pg, root, app))
            servers.append((server, Backends(pg, app)))
        before = [_cpu(s, b) for s, b in servers]

        def send(number: int) -> None:
            order = servers if number % 2 == 0 else servers[::-1]
            for server, _ in order:
                server.send(number)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, range(len(stream.plan.reports))))
        deadline = time.monotonic() + ch.HANG_SECONDS
        while not all(s.triaged() for s, _ in servers):
            if time.monotonic() > deadline:
                raise SystemExit("a version did not triage every report in time")
            time.sleep(0.05)
        after = [_cpu(s, b) for s, b in servers]
    out = []
    for (label, _), b, a in zip(versions, before, after, strict=True):
        out.append((label, [1000 * (y - x) / stream.count for x, y in zip(b, a, strict=True)]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--clients", type=int, default=4, help="client threads (each sends to both)"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("versions", nargs=2, help="label=path/to/src, twice")
    args = parser.parse_args()
    pg = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("set TIPLINE_TEST_POSTGRES_URL")
    pairs = [version.partition("=") for version in args.versions]
    versions = [(label, str(Path(src).resolve())) for label, _, src in pairs]
    labels = [label for label, _ in versions]
    spec = ch.stream_spec(args.seed, args.reports)
    with tempfile.TemporaryDirectory(prefix="tipline-chpair-") as tmp:
        root = Path(tmp)
        stream = ch.render(spec, root / "files")
        print(f"{stream.count} photos in {len(stream.plan.reports)} reports", flush=True)
        print("CPU ms per photo: serving process + hashing processes + PostgreSQL = sum")
        seen: dict[str, list[list[float]]] = {label: [] for label in labels}
        for number in range(args.rounds):
            # which server starts (and is sent a report first) alternates too
            order = versions if number % 2 == 0 else versions[::-1]
            rows = dict(one_round(order, stream, pg, root, args.clients))
            sums = {}
            for label in labels:
                own, hashing, db = rows[label]
                seen[label].append(rows[label])
                sums[label] = own + hashing + db
                print(f"  {label:<10} {own:5.1f} + {hashing:5.1f} + {db:4.1f} = {sums[label]:5.1f}")
            ratio = sums[labels[1]] / sums[labels[0]]
            load = os.getloadavg()[0]
            print(
                f"round {number + 1}: {labels[1]} / {labels[0]} = {ratio:.3f} (load {load:.1f})",
                flush=True,
            )
        print("mean over the rounds (serving process + PostgreSQL: the intake's own cost)")
        for label in labels:
            own, hashing, db = (statistics.fmean(part) for part in zip(*seen[label], strict=True))
            print(f"  {label:<10} {own:5.1f} + {hashing:5.1f} + {db:4.1f}; own {own + db:5.1f}")


if __name__ == "__main__":
    main()
