"""What tipline reads of a python-threatexchange CLI state folder (``~/.threatexchange``).

pytx keeps three kinds of state there: collaboration configs (``collab_configs/*.json``,
JSON), fetched signals (``fetched/<api>/<collab>.state.pickle``) and match indices
(``index/*.index``, pickles for pytx's own types). tipline never unpickles a file, so:

* a ``local_file`` collaboration is read from the signal file its config names (plain
  ``<type> <value>`` lines, or bare values with the config's ``signal_type``), the same
  file pytx fetches from;
* every other collaboration (ThreatExchange, NCMEC, StopNCII, Tech Against Terrorism,
  the sample set) exists only as a pickle: it is refused, and the operator exports it
  with pytx itself, ``threatexchange dataset -c NAME -P --csv > NAME.csv``, which
  ``tipline bank import BANK NAME.csv`` reads (categories and tags included).

``config.json`` (which holds API credentials) is never opened.
"""

from __future__ import annotations

import json
import shlex
import typing as t
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tipline.banks.formats import ParsedEntry
from tipline.banks.formats.csv_plain import TE_ALIASES
from tipline.banks.formats.entries import derived_entry_id, parse_signal
from tipline.errors import ImportFormatError, InputError

#: Largest collaboration config read (they are a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
#: Longest line of a local signal file (a long video's vPDQ fits).
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Collab:
    """One collaboration config: its name, API and (local_file) signal file."""

    name: str
    api: str
    enabled: bool
    filename: str | None = None
    signal_type: str | None = None

    def export_command(self, bank: str) -> str:
        """The commands that move this collaboration without a pickle."""
        csv = f"{self.name}.csv"
        return (
            f"threatexchange dataset -c {shlex.quote(self.name)} -P --csv > {shlex.quote(csv)}"
            f" && tipline bank import {shlex.quote(bank)} {shlex.quote(csv)}"
        )


def read_collabs(folder: Path) -> list[Collab]:
    """The folder's collaboration configs, by name (InputError when it is not a pytx
    state folder or a config is not one)."""
    configs = folder / "collab_configs"
    if not configs.is_dir():
        raise InputError(
            f"{folder} is not a threatexchange state folder (no collab_configs/; "
            "it is ~/.threatexchange, or $TX_STATEDIR)"
        )
    out: list[Collab] = []
    for path in sorted(configs.glob("*.json")):
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: not a collaboration config")
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a collaboration config ({exc})") from None
        name, api = (data.get("name"), data.get("api")) if isinstance(data, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(api, str):
            raise InputError(f"{path}: a collaboration config needs 'name' and 'api'")
        filename, signal_type = data.get("filename"), data.get("signal_type")
        out.append(
            Collab(
                name=name,
                api=api,
                enabled=data.get("enabled", True) is not False,
                filename=filename if isinstance(filename, str) else None,
                signal_type=signal_type if isinstance(signal_type, str) else None,
            )
        )
    return out


def local_file_entries(collab: Collab) -> Iterator[ParsedEntry | ImportFormatError]:
    """Entries of a ``local_file`` collaboration's signal file, as pytx reads it: one
    signal per line, ``<type> <value>`` or the config's ``signal_type`` and the value
    (InputError now when the file cannot be opened)."""
    path = collab.filename or ""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by _entries
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror}") from None
    return _entries(collab, path, stream)


def _entries(
    collab: Collab, path: str, stream: t.BinaryIO
) -> Iterator[ParsedEntry | ImportFormatError]:
    source = f"pytx collab {collab.name}"
    with stream:
        number = 0
        while raw := stream.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                yield ImportFormatError("line too long", path=path, line=number)
                while raw and not raw.endswith(b"\n"):  # skip the rest, bounded reads
                    raw = stream.readline(MAX_LINE_BYTES)
                continue
            line = raw.decode("utf-8", errors="replace").strip()
            if not line or line.startswith("#"):
                continue
            kind, value = collab.signal_type, line
            if kind is None:
                kind, _, value = line.partition(" ")
            kind = kind.strip().lower()
            try:
                signal = parse_signal(
                    TE_ALIASES.get(kind, kind), value.strip(), line=number, path=path
                )
            except ImportFormatError as exc:
                yield exc
                continue
            yield ParsedEntry(number, derived_entry_id(signal), (signal,), source=source)
