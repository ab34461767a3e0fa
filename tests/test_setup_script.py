"""``scripts/setup`` and the README's commands install and test what CI does.

The set-up script runs for real in a scratch copy, with the system's package tools and
Python replaced by recording stand-ins on PATH (nothing is installed)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

_PYTHON = """#!/bin/sh
# stand-in for python3.11: ensurepip importable unless $NO_ENSUREPIP is set
if [ "$1" = "-c" ]; then
    case "$2" in *ensurepip*) [ -z "$NO_ENSUREPIP" ]; exit $?;; esac
    exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python"
    printf '#!/bin/sh\\necho "pip $*" >> "$LOG"\\n' > "$3/bin/pip"
    chmod +x "$3/bin/python" "$3/bin/pip"
    exit 0
fi
exit 1
"""
_DPKG_QUERY = """#!/bin/sh
# every package is installed except those named in $MISSING
for p in $MISSING; do [ "$p" = "$3" ] && exit 1; done
printf 'install ok installed'
"""
_RECORD = """#!/bin/sh
echo "$(basename "$0") $*" >> "$LOG"
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _setup(tmp_path: Path, *, ensurepip: bool, missing: str = "") -> list[str]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup", repo / "scripts" / "setup")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    _exe(stubs / "python3.11", _PYTHON)
    _exe(stubs / "dpkg-query", _DPKG_QUERY)
    _exe(stubs / "apt-get", _RECORD)
    _exe(stubs / "sudo", '#!/bin/sh\nexec "$@"\n')
    log = tmp_path / "log"
    log.touch()
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "LOG": str(log),
        "MISSING": missing + (" python3.11-venv" if not ensurepip else ""),
        "HOME": str(tmp_path),
    }
    if not ensurepip:
        env["NO_ENSUREPIP"] = "1"
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / "setup")], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return log.read_text().splitlines()


def test_debian_python_without_venv_gets_python3_11_venv(tmp_path: Path) -> None:
    calls = _setup(tmp_path, ensurepip=False)
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1 and "python3.11-venv" in installs[0].split()
    assert "pip install -q -e .[dev,bench]" in calls


def test_python_with_venv_needs_nothing_from_apt(tmp_path: Path) -> None:
    """As with pyenv's python3.11: no apt-get at all when every package is there."""
    calls = _setup(tmp_path, ensurepip=True)
    assert not [c for c in calls if c.startswith("apt-get")]
    assert "pip install -q -e .[dev,bench]" in calls


def test_missing_debian_packages_are_installed(tmp_path: Path) -> None:
    calls = _setup(tmp_path, ensurepip=True, missing="ffmpeg pkg-config")
    (install,) = [c.split() for c in calls if c.startswith("apt-get install")]
    assert {"ffmpeg", "pkg-config"} <= set(install) and "python3.11-venv" not in install


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block is not None
    return block.group(1).strip().splitlines()


def test_readme_and_ci_install_and_test_alike() -> None:
    """The README's set-up and test lines are what .ci/run runs: same extras (so no test
    skips here for a missing extra that runs in CI), same PostgreSQL URL, same command."""
    ci = (REPO / ".ci" / "run").read_text()
    setup_line, test_line = _readme_commands()[:2]
    assert setup_line.startswith("scripts/setup &&")  # default extras
    assert re.search(r"^scripts/setup(\s|$)", ci, re.M), "CI must use the default extras"
    assert re.search(r"^scripts/setup\s+[a-z]", ci, re.M) is None
    ci_url = re.search(r'TIPLINE_TEST_POSTGRES_URL="([^"]+)"', ci)
    assert ci_url is not None and f"TIPLINE_TEST_POSTGRES_URL={ci_url.group(1)}" in test_line
    assert test_line.rstrip().endswith("scripts/test") and "\nscripts/test" in ci


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_setup_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "setup")], check=True)
    assert os.access(REPO / "scripts" / "setup", os.X_OK)
