"""Viral bundling: many uploads of one perceptual cluster, by different users, within
a time window, become ONE report (``batchedReport reason="VIRAL_POTENTIAL_MEME"``)
instead of one report per upload.

Clustering is greedy and deterministic: uploads are taken in time order (ties by key);
each joins the first open cluster whose founding upload is within ``max_distance`` PDQ
bits and within ``window`` of it, else founds a new cluster. A cluster with at least
``threshold`` distinct uploaders is viral; every other upload is reported on its own.
Uploads without a PDQ hash are never bundled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tipline.errors import InputError


@dataclass(frozen=True, slots=True)
class Upload:
    """One reportable upload: ``key`` (submission id), PDQ (32 bytes) or None."""

    key: str
    uploader: str | None
    at: datetime
    pdq: bytes | None


@dataclass
class Cluster:
    """Uploads grouped around their founding upload."""

    founder: Upload
    members: list[Upload] = field(default_factory=list)

    def uploaders(self) -> set[str]:
        """Distinct uploader accounts (uploads without one count as distinct)."""
        return {m.uploader or f"?{m.key}" for m in self.members}


@dataclass(frozen=True, slots=True)
class Plan:
    """What to report: viral bundles (one report each) and single uploads."""

    bundles: list[list[Upload]]
    singles: list[Upload]


def _distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def plan(
    uploads: Sequence[Upload], *, window: timedelta, threshold: int, max_distance: int
) -> Plan:
    """Split ``uploads`` into viral bundles and singles (see the module docstring)."""
    if threshold < 2:
        raise InputError("a viral bundle needs a threshold of at least 2 uploaders")
    if window <= timedelta(0):
        raise InputError("the bundling window must be positive")
    clusters: list[Cluster] = []
    singles: list[Upload] = []
    for upload in sorted(uploads, key=lambda u: (u.at, u.key)):
        if upload.pdq is None:
            singles.append(upload)
            continue
        if len(upload.pdq) != 32:
            raise InputError(f"{upload.key}: a PDQ hash is 32 bytes")
        home = None
        for cluster in clusters:
            founder = cluster.founder
            assert founder.pdq is not None
            if (
                upload.at - founder.at <= window
                and _distance(upload.pdq, founder.pdq) <= max_distance
            ):
                home = cluster
                break
        if home is None:
            home = Cluster(upload)
            clusters.append(home)
        home.members.append(upload)
    bundles = []
    for cluster in clusters:
        if len(cluster.uploaders()) >= threshold:
            bundles.append(cluster.members)
        else:
            singles.extend(cluster.members)
    singles.sort(key=lambda u: (u.at, u.key))
    return Plan(bundles=bundles, singles=singles)
