"""The plain-data types of a scan: its options, a batch's outcome, a run's summary."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions

#: Items per batch (one transaction, one checkpoint) unless the caller chooses.
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """How items are hashed and walked; stored with the scan so a resume reuses them."""

    signals: tuple[str, ...] = ()
    dihedral: bool = False
    decode: DecodeMode = DecodeMode.FAST
    follow_symlinks: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    #: absolute folder that relative paths in file lists (``@LIST``, ``-``) are resolved
    #: against: the working folder the scan was started in, so a resume from any folder
    #: finds the same files (None: scans recorded before this was stored)
    base_dir: str | None = None
    #: photos are also matched without their borders, letterbox, caption bars and
    #: screenshot frames (:mod:`tipline.signals.normalize`); scans recorded before this
    #: was stored resume without it
    normalize: bool = True

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in ``scans.options``."""
        return {
            "signals": list(self.signals),
            "dihedral": self.dihedral,
            "decode": self.decode.value,
            "follow_symlinks": self.follow_symlinks,
            "batch_size": self.batch_size,
            "base_dir": self.base_dir,
            "normalize": self.normalize,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScanOptions:
        """Inverse of :meth:`to_json`."""
        return cls(
            signals=tuple(data.get("signals", ())),
            dihedral=bool(data.get("dihedral", False)),
            decode=DecodeMode(data.get("decode", DecodeMode.FAST.value)),
            follow_symlinks=bool(data.get("follow_symlinks", False)),
            batch_size=int(data.get("batch_size", DEFAULT_BATCH_SIZE)),
            base_dir=data.get("base_dir"),
            normalize=bool(data.get("normalize", False)),
        )

    def hash_options(self) -> HashOptions:
        """The hashing part."""
        return HashOptions(
            signals=self.signals,
            dihedral=self.dihedral,
            decode=self.decode,
            normalize=self.normalize,
        )


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a worker reports after committing a batch."""

    batch_no: int
    items: int
    matched: int
    failed: int
    hash_seconds: float  # time spent hashing in the worker, seconds
    duplicates: int = 0  # items found already recorded (by an earlier run's worker)
    cpu_seconds: float = 0.0  # worker CPU time for the whole batch (hash, match, commit)
    #: (path, error message) of each failed item of the batch
    errors: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain-data form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchOutcome:
        """Inverse of :meth:`to_json`."""
        errors = tuple((str(p), str(m)) for p, m in data.get("errors", ()))
        return cls(**{**data, "errors": errors})


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """The end of a run: this run's counts and the scan's totals."""

    scan_id: str
    total: int  # items the sources hold
    scanned: int  # items recorded by this run
    matched: int  # of those, with at least one (unsuppressed) match
    failed: int  # of those, with an error
    skipped: int  # items already recorded before this run (resume)
    seconds: float  # wall time of this run, seconds
    status: str
    worker_cpu_seconds: float = 0.0  # CPU time the workers spent on this run's batches

    @property
    def rate(self) -> float:
        """Items recorded per second in this run."""
        return self.scanned / self.seconds if self.seconds > 0 else 0.0


#: progress callback: (items done in this run, items to do in this run)
ProgressFn = Callable[[int, int], None]
