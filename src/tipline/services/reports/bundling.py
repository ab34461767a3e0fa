"""Viral bundling: many uploads of one perceptual cluster, by different users, within
a time window, become ONE report (``batchedReport reason="VIRAL_POTENTIAL_MEME"``)
instead of one report per upload.

Clustering is greedy and deterministic: uploads are taken in time order (ties by key);
each joins the first open cluster whose founding upload is within ``max_distance`` PDQ
bits and within ``window`` of it, else founds a new cluster. A cluster with at least
``threshold`` distinct uploaders is viral; every other upload is reported on its own.
Uploads without a PDQ hash are never bundled.

A report holds at most ``max_files`` files (the receiver never gets an unbounded
document): an upload joins only a cluster with room for all its files, and a cluster
that reaches ``max_files`` is closed, as the match-time bundle is released the moment it
is full (:mod:`tipline.services.reports.viral`). The cluster's next upload founds a new
one, which counts the uploaders of the full clusters it continues (those its founder
would have joined) towards the threshold; an upload with more files than ``max_files``
is reported on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tipline.errors import InputError


@dataclass(frozen=True, slots=True)
class Upload:
    """One reportable upload: ``key`` (submission id), PDQ (32 bytes) or None, and the
    number of files it puts in a report."""

    key: str
    uploader: str | None
    at: datetime
    pdq: bytes | None
    files: int = 1


@dataclass
class Cluster:
    """Uploads grouped around their founding upload."""

    founder: Upload
    members: list[Upload] = field(default_factory=list)
    #: uploaders of the full clusters this one continues (they count for the threshold)
    carried: set[str] = field(default_factory=set)
    #: files of its uploads
    files: int = 0
    #: reached the file cap: takes no more uploads
    full: bool = False

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


def _near(cluster: Cluster, upload: Upload, window: timedelta, max_distance: int) -> bool:
    founder = cluster.founder
    assert founder.pdq is not None and upload.pdq is not None
    return upload.at - founder.at <= window and _distance(upload.pdq, founder.pdq) <= max_distance


def plan(
    uploads: Sequence[Upload],
    *,
    window: timedelta,
    threshold: int,
    max_distance: int,
    max_files: int | None = None,
) -> Plan:
    """Split ``uploads`` into viral bundles and singles (see the module docstring);
    ``max_files``: most files of one bundle (None: no cap)."""
    if threshold < 2:
        raise InputError("a viral bundle needs a threshold of at least 2 uploaders")
    if window <= timedelta(0):
        raise InputError("the bundling window must be positive")
    if max_files is not None and max_files < 1:
        raise InputError("a bundle holds at least 1 file")
    cap = max_files if max_files is not None else float("inf")
    clusters: list[Cluster] = []
    full: list[Cluster] = []
    singles: list[Upload] = []
    for upload in sorted(uploads, key=lambda u: (u.at, u.key)):
        if upload.pdq is None or upload.files > cap:
            singles.append(upload)
            continue
        if len(upload.pdq) != 32:
            raise InputError(f"{upload.key}: a PDQ hash is 32 bytes")
        home = None
        for cluster in clusters:
            if (
                not cluster.full
                and cluster.files + upload.files <= cap
                and _near(cluster, upload, window, max_distance)
            ):
                home = cluster
                break
        if home is None:
            home = Cluster(upload)
            for before in full:
                if _near(before, upload, window, max_distance):
                    home.carried |= before.uploaders() | before.carried
            clusters.append(home)
        home.members.append(upload)
        home.files += upload.files
        if home.files >= cap:
            home.full = True
            full.append(home)
    bundles = []
    for cluster in clusters:
        if len(cluster.uploaders() | cluster.carried) >= threshold:
            bundles.append(cluster.members)
        else:
            singles.extend(cluster.members)
    singles.sort(key=lambda u: (u.at, u.key))
    return Plan(bundles=bundles, singles=singles)
