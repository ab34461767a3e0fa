"""The clearinghouse package loads its parts on first use: ``tipline worker`` registers
the triage job without importing the intake, the pipeline or the match index (numba),
and every name the package exports is the object its home module defines."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests._cli import run_tipline

from tipline.services import clearinghouse

HEAVY = (
    "numba",
    "tipline.index",
    "tipline.services.matching",
    "tipline.services.clearinghouse.intake",
    "tipline.services.clearinghouse.pipeline",
)

_PROBE = """
import json, sys
from tipline.config import get_settings
from tipline.services.clearinghouse import triage_job
from tipline.services.database import open_database
handlers = triage_job.worker_handlers(open_database(), get_settings())
heavy = json.loads(sys.argv[1])
print(json.dumps({
    "kinds": sorted(handlers),
    "loaded": sorted(m for m in sys.modules if m.startswith(tuple(heavy))),
}))
"""


def test_the_workers_triage_job_loads_no_intake_pipeline_or_index(tmp_path: Path) -> None:
    env = {**os.environ, "TIPLINE_DATA_DIR": str(tmp_path)}
    env.pop("TIPLINE_DATABASE_URL", None)
    done = subprocess.run(  # a fresh interpreter: this process has imported everything
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    probe = json.loads(done.stdout)
    assert probe == {"kinds": [clearinghouse.TRIAGE_JOB_KIND], "loaded": []}


@pytest.mark.parametrize("name", clearinghouse.__all__)
def test_every_exported_name_is_its_home_modules_object(name: str) -> None:
    home = importlib.import_module(f"tipline.services.clearinghouse.{clearinghouse._HOMES[name]}")
    assert getattr(clearinghouse, name) is getattr(home, name)


def test_exports_and_homes_name_the_same_things() -> None:
    assert sorted(clearinghouse.__all__) == sorted(clearinghouse._HOMES)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = clearinghouse.no_such_thing  # type: ignore[attr-defined]


def test_the_worker_names_unknown_triage_weights_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path),
        "TIPLINE_TRIAGE_WEIGHTS": json.dumps({"new_material": 9, "no.such.factor": 1}),
    }
    env.pop("TIPLINE_DATABASE_URL", None)
    done = run_tipline(["worker", "--once"], env=env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no.such.factor" in lines[0] and "new_material" not in lines[0]
