"""``tipline simulate``: a realistic stream of CyberTipline reports made of benign media,
submitted through the ISPWS protocol like any provider, with the ground truth beside it.

The shape follows NCMEC's 2023 figures: files per report (about 2.9 on average, most
reports carrying one), about 3.1 files per perceptually distinct item (exact copies and
resized/cropped/re-encoded ones), about 47% video, bursts of one viral picture re-shared
by many accounts within an hour, 92% of accounts outside the United States, and accounts
that come back in several reports. Nothing depicts anyone: items are quadrants of the
installed wallpapers and seeded drawings, checked to be perceptually distinct from each
other (PDQ) so the truth's clusters are real.

:func:`plan` is a pure function of :class:`SimulationSpec` (the seed included);
:func:`render` makes a planned file's bytes; :func:`run` submits a plan through an
:class:`~tipline.services.reports.client.IspwsClient` per provider and writes one JSON
line per item, account and report (with the receiver's report and file ids). The
addresses come from a synthetic geography (one /16 per country or US state) that
:func:`write_geo_database` writes as a MaxMind-format database, so routing can be
checked against the truth too.
"""

from __future__ import annotations

import io
import ipaddress
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from PIL import Image

from tipline._optional import require
from tipline.errors import InputError
from tipline.services.clearinghouse import simmedia
from tipline.services.clearinghouse.simmedia import Source, Transform, file_digests
from tipline.services.reports.builder import build_file_details, build_report
from tipline.services.reports.client import IspwsClient
from tipline.services.reports.model import (
    Classification,
    DeviceIdentifier,
    FileAnnotation,
    IncidentType,
    IpCapture,
    IpEvent,
    ReportAnnotation,
    ReportContent,
    ReportedFile,
    ReportedUser,
    Reporter,
)

MediaKind = Literal["photo", "video"]

#: files per report: weights of 1, 2, ... files (mean about 2.85)
FILES_PER_REPORT = (0.40, 0.20, 0.12, 0.08, 0.06, 0.04, 0.03, 0.03, 0.02, 0.02)
#: countries of accounts outside the US, with weights
COUNTRIES = {
    "IN": 25, "PH": 8, "BD": 7, "ID": 6, "PK": 6, "SA": 4, "TR": 4, "VN": 4, "DZ": 4,
    "MX": 4, "BR": 4, "IQ": 4, "CO": 3, "NG": 3, "EG": 3, "TH": 3, "GB": 3, "DE": 3,
    "FR": 3, "MA": 2, "KE": 2, "UA": 2, "AR": 2, "CA": 2, "AU": 2,
}  # fmt: skip
#: US states of US accounts, with weights
US_STATES = {
    "CA": 15, "TX": 12, "FL": 10, "NY": 8, "PA": 5, "IL": 5, "OH": 5, "GA": 5, "NC": 5,
    "MI": 5, "WA": 4, "AZ": 4, "MA": 3, "VA": 3, "NJ": 3, "TN": 3, "IN": 3,
}  # fmt: skip
#: first address of the synthetic geography; each region gets the next /16
GEO_BASE = ipaddress.IPv4Address("30.0.0.0")
#: smallest PDQ distance (bits) between two items' originals, and their least quality
MIN_ITEM_DISTANCE, MIN_ITEM_QUALITY = 90, 50
#: largest fraction cut from one side of a transformed copy (PDQ moves fast with crops)
MAX_CROP = 0.005
#: an item whose probe copies (:data:`_PROBES`) move its PDQ further is not used
MAX_PROBE_DISTANCE = 28
#: least PDQ quality of an item at video size: vPDQ ignores frames under quality 50, and a
#: video's frames (smaller, re-encoded) lose some quality against this estimate
MIN_FRAME_QUALITY = 70
#: smallest scale and JPEG quality of a transformed copy
MIN_SCALE, MIN_QUALITY = 0.72, 60
_PROBES = (
    Transform(exact=False, scale=MIN_SCALE, crop=(MAX_CROP, MAX_CROP, 0, 0), quality=MIN_QUALITY),
    Transform(exact=False, scale=MIN_SCALE, crop=(0, 0, MAX_CROP, MAX_CROP), quality=MIN_QUALITY),
)


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate. Defaults are small so a run takes seconds."""

    seed: int = 0
    reports: int = 20
    files_per_item: float = 3.1
    video_share: float = 0.47
    international_share: float = 0.92
    #: share of reports (outside bursts) from an account seen before
    repeat_account_share: float = 0.35
    #: viral pictures, and reports re-sharing each within an hour
    viral_bursts: int = 1
    burst_reports: int = 6
    #: share of non-exact copies among an item's files (the rest are exact duplicates)
    transformed_share: float = 0.6
    max_files_per_report: int = 10
    providers: tuple[str, ...] = ("esp-sim",)
    #: longest side of photos, pixels; width of videos, pixels; video length, seconds
    photo_side: int = 320
    #: enlarge sources smaller than ``photo_side`` (wallpaper quadrants are 0.3-1 MP), so
    #: every original has exactly that longest side
    upscale: bool = False
    video_side: int = 96
    video_seconds: float = 1.0
    #: wallpaper folder used for half the items (the rest are drawings); None: drawings
    wallpapers: Path | None = Path("/usr/share/backgrounds")
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    days: float = 1.0

    def check(self) -> None:
        """:class:`InputError` for values that cannot make a stream."""
        if self.reports < 1:
            raise InputError("simulate: at least one report")
        if not self.providers:
            raise InputError("simulate: at least one provider")
        for name, value in (
            ("video_share", self.video_share),
            ("international_share", self.international_share),
            ("repeat_account_share", self.repeat_account_share),
            ("transformed_share", self.transformed_share),
        ):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"simulate: {name} must be within 0..1")
        if self.files_per_item < 1.0:
            raise InputError("simulate: files_per_item must be at least 1")
        if self.viral_bursts < 0 or self.burst_reports < 1 or self.max_files_per_report < 1:
            raise InputError("simulate: viral_bursts >= 0, burst_reports and files >= 1")
        if not 16 <= self.photo_side <= 4096 or not 16 <= self.video_side <= 1024:
            raise InputError("simulate: photo_side 16..4096 and video_side 16..1024 pixels")
        if not 0.25 <= self.video_seconds <= 30:
            raise InputError("simulate: video_seconds 0.25..30")


@dataclass(frozen=True)
class Item:
    """One perceptually distinct picture or clip."""

    number: int
    media: MediaKind
    source: Source
    viral: bool

    @property
    def id(self) -> str:
        """``item-0007``."""
        return f"item-{self.number:04d}"


@dataclass(frozen=True)
class Account:
    """A reported account: where it is, its addresses and identifiers."""

    number: int
    provider: str
    country: str
    subdivision: str | None
    ips: tuple[str, ...]
    registered_at: datetime

    @property
    def id(self) -> str:
        """The provider's account id, ``acct-0007``."""
        return f"acct-{self.number:04d}"


@dataclass(frozen=True)
class PlannedFile:
    """One file of a report: which item, which copy, what the provider says of it."""

    item: int
    transform: Transform
    name: str
    classification: Classification | None
    potential_meme: bool


@dataclass(frozen=True)
class PlannedReport:
    """One report to submit."""

    number: int
    account: int
    at: datetime
    files: tuple[PlannedFile, ...]
    viral_item: int | None
    incident_type: IncidentType
    escalate: bool
    annotations: frozenset[ReportAnnotation] = frozenset()


@dataclass(frozen=True)
class Plan:
    """A whole simulated stream (no bytes yet)."""

    spec: SimulationSpec
    items: tuple[Item, ...]
    accounts: tuple[Account, ...]
    reports: tuple[PlannedReport, ...]
    #: region (``IN`` or ``US-CA``) -> its /16
    geography: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> int:
        """Files over all reports."""
        return sum(len(r.files) for r in self.reports)


def _weighted(rng: random.Random, table: dict[str, int]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


def geography() -> dict[str, str]:
    """Region -> /16 of the synthetic geography (countries, then ``US-<state>``)."""
    regions = [*COUNTRIES, *(f"US-{s}" for s in US_STATES)]
    return {
        region: f"{ipaddress.IPv4Address(int(GEO_BASE) + (i << 16))}/16"
        for i, region in enumerate(regions)
    }


def _sources(spec: SimulationSpec, count: int, rng: random.Random) -> list[Source]:
    """``count`` perceptually distinct pictures: no two originals within
    :data:`MIN_ITEM_DISTANCE` PDQ bits, none below :data:`MIN_ITEM_QUALITY`, none whose
    probe copies move more than :data:`MAX_PROBE_DISTANCE` bits (so every copy of an
    item stays near its original and the truth's clusters can be found), none under
    :data:`MIN_FRAME_QUALITY` at video size (so a video's frames stay hashable)."""
    papers = [str(p) for p in simmedia.wallpapers(spec.wallpapers)]
    candidates: list[Source] = [Source(wallpaper=p, quadrant=q) for p in papers for q in range(4)]
    rng.shuffle(candidates)
    accepted: list[Source] = []
    hashes: list[np.ndarray[Any, np.dtype[np.uint8]]] = []
    drawing = 0
    while len(accepted) < count:
        if candidates and rng.random() < 0.5:
            source = candidates.pop()
        else:
            source = Source(seed=spec.seed * 1_000_003 + drawing)
            drawing += 1
            if drawing > 50 * count + 1000:
                raise InputError("simulate: cannot draw enough distinct pictures")
        picture = simmedia.original(source, spec.photo_side, upscale=spec.upscale)
        value, quality = simmedia.pdq_of(picture)
        bits = np.unpackbits(np.frombuffer(value, dtype=np.uint8))
        if quality < MIN_ITEM_QUALITY:
            continue
        if any(_moved(picture, probe, bits) > MAX_PROBE_DISTANCE for probe in _PROBES):
            continue
        if spec.video_share > 0:
            frame = picture.copy()
            frame.thumbnail((spec.video_side, spec.video_side))
            if simmedia.pdq_of(frame)[1] < MIN_FRAME_QUALITY:
                continue
        if hashes:
            nearest = int(np.min(np.count_nonzero(np.stack(hashes) != bits, axis=1)))
            if nearest < MIN_ITEM_DISTANCE:
                continue
        accepted.append(source)
        hashes.append(bits)
    return accepted


def _moved(
    picture: Image.Image, probe: Transform, bits: np.ndarray[Any, np.dtype[np.uint8]]
) -> int:
    copy = Image.open(io.BytesIO(simmedia.photo(picture, probe)))
    value, _ = simmedia.pdq_of(copy)
    return int(np.count_nonzero(np.unpackbits(np.frombuffer(value, dtype=np.uint8)) != bits))


def _media(counts: Sequence[int], viral: int, share: float, rng: random.Random) -> list[MediaKind]:
    """Photo or video per item so that videos make ``share`` of the files as nearly as
    the items' file counts allow (viral items are photos: memes)."""
    media: list[MediaKind] = ["photo"] * len(counts)
    target = share * sum(counts)
    order = list(range(viral, len(counts)))
    rng.shuffle(order)
    videos = 0
    for number in order:
        if videos + counts[number] / 2 <= target:
            media[number] = "video"
            videos += counts[number]
    return media


def _transform(spec: SimulationSpec, rng: random.Random) -> Transform:
    if rng.random() >= spec.transformed_share:
        return Transform()
    crop = tuple(round(rng.uniform(0.0, MAX_CROP), 3) for _ in range(4))
    return Transform(
        exact=False,
        scale=round(rng.uniform(MIN_SCALE, 1.0), 3),
        crop=(crop[0], crop[1], crop[2], crop[3]),
        quality=rng.randrange(MIN_QUALITY, 96),
    )


def plan(spec: SimulationSpec) -> Plan:
    """The stream ``spec`` describes; the same spec gives the same plan."""
    spec.check()
    rng = random.Random(spec.seed)
    burst_total = min(spec.viral_bursts * spec.burst_reports, spec.reports // 2)
    bursts = burst_total // spec.burst_reports if spec.burst_reports else 0
    burst_total = bursts * spec.burst_reports
    normal = spec.reports - burst_total
    sizes = rng.choices(range(1, len(FILES_PER_REPORT) + 1), weights=FILES_PER_REPORT, k=normal)
    sizes = [min(s, spec.max_files_per_report) for s in sizes]
    total_files = sum(sizes) + burst_total
    item_count = max(bursts + 1, round(total_files / spec.files_per_item))
    sources = _sources(spec, item_count, rng)

    # every non-viral item gets one slot first, the rest follow a skewed popularity
    slots = [(r, k) for r, size in enumerate(sizes) for k in range(size)]
    rng.shuffle(slots)
    plain = list(range(bursts, item_count))
    popularity = [1.0 / (rank + 1) ** 0.7 for rank in range(len(plain))]
    item_of: dict[tuple[int, int], int] = {}
    for i, slot in enumerate(slots):
        item_of[slot] = plain[i] if i < len(plain) else rng.choices(plain, popularity)[0]
    counts = [spec.burst_reports if n < bursts else 0 for n in range(item_count)]
    for number in item_of.values():
        counts[number] += 1
    media = _media(counts, bursts, spec.video_share, rng)
    items = [Item(n, media[n], sources[n], n < bursts) for n in range(item_count)]

    window = timedelta(days=spec.days)
    times = sorted(spec.start + window * rng.random() for _ in range(normal))
    starts = [spec.start + window * rng.random() for _ in range(bursts)]
    regions = geography()
    accounts: list[Account] = []

    def new_account(provider: str, at: datetime) -> int:
        if rng.random() < spec.international_share:
            country, sub = _weighted(rng, COUNTRIES), None
        else:
            country, sub = "US", _weighted(rng, US_STATES)
        net = ipaddress.ip_network(regions[f"US-{sub}" if sub else country])
        hosts = tuple(
            str(net.network_address + rng.randrange(1, net.num_addresses - 1))
            for _ in range(rng.choice((1, 1, 2)))
        )
        accounts.append(
            Account(
                len(accounts),
                provider,
                country,
                sub,
                hosts,
                at - timedelta(days=rng.randrange(1, 900)),
            )
        )
        return len(accounts) - 1

    uses: list[int] = []
    drafts: list[tuple[datetime, int, list[PlannedFile], int | None]] = []
    for r, size in enumerate(sizes):
        at = times[r]
        if accounts and rng.random() < spec.repeat_account_share:
            account = rng.choices(range(len(accounts)), weights=[u + 1 for u in uses])[0]
        else:
            account = new_account(rng.choice(spec.providers), at)
            uses.append(0)
        uses[account] += 1
        files = [_file(spec, rng, items[item_of[(r, k)]], k) for k in range(size)]
        drafts.append((at, account, files, None))
    for b in range(bursts):
        for _ in range(spec.burst_reports):
            at = starts[b] + timedelta(minutes=rng.uniform(0, 60))
            account = new_account(rng.choice(spec.providers), at)
            uses.append(1)
            drafts.append((at, account, [_file(spec, rng, items[b], 0, meme=True)], b))
    drafts.sort(key=lambda d: d[0])
    reports = []
    for number, (at, account, files, viral) in enumerate(drafts):
        kind = rng.random()
        incident = IncidentType.ONLINE_ENTICEMENT if kind < 0.03 else IncidentType.CHILD_PORNOGRAPHY
        notes = frozenset({ReportAnnotation.SEXTORTION}) if kind < 0.015 else frozenset()
        reports.append(
            PlannedReport(
                number=number,
                account=account,
                at=at,
                files=tuple(files),
                viral_item=viral,
                incident_type=incident,
                escalate=rng.random() < 0.01,
                annotations=notes,
            )
        )
    return Plan(spec, tuple(items), tuple(accounts), tuple(reports), regions)


def _file(
    spec: SimulationSpec, rng: random.Random, item: Item, k: int, *, meme: bool = False
) -> PlannedFile:
    ext = "mp4" if item.media == "video" else "jpg"
    classes = (
        None,
        None,
        Classification.A1,
        Classification.A2,
        Classification.B1,
        Classification.B2,
    )
    return PlannedFile(
        item=item.number,
        transform=_transform(spec, rng),
        name=f"{'VID' if item.media == 'video' else 'IMG'}_{rng.randrange(10**6):06d}_{k}.{ext}",
        classification=rng.choice(classes),
        potential_meme=meme,
    )


class Renderer:
    """Makes planned files' bytes, keeping recent originals in memory."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._originals: dict[int, Image.Image] = {}
        self._pdq: dict[int, bytes] = {}

    def original(self, item: Item) -> Image.Image:
        """The item's original picture."""
        found = self._originals.get(item.number)
        if found is None:
            if len(self._originals) > 64:
                self._originals.clear()
            spec = self.plan.spec
            found = simmedia.original(item.source, spec.photo_side, upscale=spec.upscale)
            self._originals[item.number] = found
        return found

    def render(self, planned: PlannedFile) -> bytes:
        """The bytes of one planned file."""
        item = self.plan.items[planned.item]
        img = self.original(item)
        if item.media == "video":
            spec = self.plan.spec
            return simmedia.video(
                img, planned.transform, seconds=spec.video_seconds, side=spec.video_side
            )
        return simmedia.photo(img, planned.transform)

    def pdq_distance(self, planned: PlannedFile, data: bytes) -> int | None:
        """PDQ bits between a photo file and its item's original (None for a video)."""
        item = self.plan.items[planned.item]
        if item.media != "photo":
            return None
        found = self._pdq.get(item.number)
        if found is None:
            found = simmedia.pdq_of(self.original(item))[0]
            self._pdq[item.number] = found
        value, _ = simmedia.pdq_of(Image.open(io.BytesIO(data)))
        return sum((a ^ b).bit_count() for a, b in zip(found, value, strict=True))


def render(plan: Plan, planned: PlannedFile) -> bytes:
    """The bytes of one planned file (see :class:`Renderer` to reuse originals)."""
    return Renderer(plan).render(planned)


def _content(
    plan: Plan,
    report: PlannedReport,
    files: Sequence[tuple[PlannedFile, bytes]],
    digests: Sequence[tuple[str, str]] | None = None,
) -> tuple[ReportContent, list[ReportedFile]]:
    account = plan.accounts[report.account]
    login = IpCapture(ip=account.ips[-1], event=IpEvent.LOGIN, at=report.at - timedelta(minutes=7))
    registration = IpCapture(
        ip=account.ips[0], event=IpEvent.REGISTRATION, at=account.registered_at
    )
    upload_ip = IpCapture(ip=account.ips[-1], event=IpEvent.UPLOAD, at=report.at)
    if digests is None:
        digests = [file_digests(data) for _, data in files]
    elif len(digests) != len(files):
        raise InputError("simulate: one (MD5, SHA-1) pair per file")
    reported = []
    for (planned, data), (md5, sha1) in zip(files, digests, strict=True):
        reported.append(
            ReportedFile(
                file_name=planned.name,
                md5=md5,
                sha1=sha1,
                size=len(data),
                viewed_by_esp=planned.classification is not None,
                exif_viewed_by_esp=False,
                uploaded_at=report.at,
                upload_ip=upload_ip,
                potential_meme=planned.potential_meme,
                annotations=frozenset({FileAnnotation.VIRAL})
                if planned.potential_meme
                else frozenset(),
                classification=planned.classification,
            )
        )
    user = ReportedUser(
        esp_identifier=account.id,
        esp_service=account.provider,
        screen_name=f"user{account.number:04d}",
        emails=(f"user{account.number:04d}@{account.provider}.example",),
        ip_events=(registration, login),
        devices=(
            DeviceIdentifier(id_type="device", value=f"dev-{plan.spec.seed}-{account.number:04d}"),
        ),
    )
    content = ReportContent(
        report_id=f"sim{plan.spec.seed:06d}{report.number:08d}"[:26],
        incident_type=report.incident_type,
        incident_at=report.at,
        reporter=Reporter(email=f"reports@{account.provider}.example"),
        files=tuple(reported),
        users=(user,),
        platform=account.provider,
        escalation_reason="Simulated escalation (benign test data)" if report.escalate else None,
        annotations=report.annotations,
        additional_info="tipline simulate: benign test media, not a real report",
    )
    return content, reported


@dataclass
class RunStats:
    """What a run submitted."""

    reports: int = 0
    files: int = 0
    bytes: int = 0
    videos: int = 0


def truth_header(plan: Plan) -> list[dict[str, Any]]:
    """The truth lines written before the reports: the run, items, accounts."""
    spec = plan.spec
    lines: list[dict[str, Any]] = [
        {
            "kind": "simulation",
            "seed": spec.seed,
            "reports": len(plan.reports),
            "files": plan.files,
            "items": len(plan.items),
            "providers": list(spec.providers),
            "geography": plan.geography,
        }
    ]
    counts = [0] * len(plan.items)
    for report in plan.reports:
        for f in report.files:
            counts[f.item] += 1
    for item in plan.items:
        lines.append(
            {
                "kind": "item",
                "item": item.id,
                "media": item.media,
                "source": item.source.label(),
                "viral": item.viral,
                "files": counts[item.number],
            }
        )
    for account in plan.accounts:
        lines.append(
            {
                "kind": "account",
                "account": account.id,
                "provider": account.provider,
                "country": account.country,
                "subdivision": account.subdivision,
                "ips": list(account.ips),
            }
        )
    return lines


def run(
    plan: Plan,
    clients: dict[str, IspwsClient] | None,
    truth: IO[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    renderer: Renderer | None = None,
) -> RunStats:
    """Submit every report of ``plan`` with its provider's client (None: a dry run that
    only renders and writes the truth); one JSON line per item, account and report.
    ``renderer`` makes the files' bytes (default: a new :class:`Renderer` of ``plan``)."""
    for line in truth_header(plan):
        truth.write(json.dumps(line, sort_keys=True) + "\n")
    if renderer is None:
        renderer = Renderer(plan)
    stats = RunStats()
    for done, report in enumerate(plan.reports, 1):
        files = [(f, renderer.render(f)) for f in report.files]
        remote_id: int | None = None
        file_ids: tuple[str | None, ...] = (None,) * len(files)
        if clients is not None:
            client = clients[plan.accounts[report.account].provider]
            remote_id, file_ids = submit_report(client, plan, report, files)
        line = report_line(plan, report, files, remote_id, file_ids, renderer)
        truth.write(json.dumps(line, sort_keys=True) + "\n")
        truth.flush()
        stats.reports += 1
        stats.files += len(files)
        stats.bytes += sum(len(d) for _, d in files)
        stats.videos += sum(1 for f, _ in files if plan.items[f.item].media == "video")
        if progress is not None:
            progress(done, len(plan.reports))
    return stats


def submit_report(
    client: IspwsClient,
    plan: Plan,
    report: PlannedReport,
    files: Sequence[tuple[PlannedFile, bytes]],
    *,
    digests: Sequence[tuple[str, str]] | None = None,
) -> tuple[int, tuple[str | None, ...]]:
    """Submit one planned report with its rendered ``files`` (submit, upload and
    fileinfo per file, finish); the receiver's report id and file ids. ``digests``:
    each file's :func:`file_digests`, when the caller has them already (as a provider
    has its files' digests from hashing them before it reports; a load generator
    computes them before its clock starts); computed here otherwise."""
    content, reported = _content(plan, report, files, digests)
    remote_id = client.submit(build_report(content))
    file_ids: list[str | None] = []
    for (planned, data), meta in zip(files, reported, strict=True):
        answer = client.upload(remote_id, planned.name, data)
        file_ids.append(answer.file_id)
        client.fileinfo(build_file_details(meta, report_id=remote_id, file_id=str(answer.file_id)))
    client.finish(remote_id)
    return remote_id, tuple(file_ids)


def report_line(
    plan: Plan,
    report: PlannedReport,
    files: Sequence[tuple[PlannedFile, bytes]],
    remote_id: int | None,
    file_ids: Sequence[str | None],
    renderer: Renderer,
) -> dict[str, Any]:
    """The truth line of one report (receiver ids None in a dry run)."""
    account = plan.accounts[report.account]
    return {
        "kind": "report",
        "number": report.number,
        "report_id": remote_id,
        "provider": account.provider,
        "account": account.id,
        "country": account.country,
        "subdivision": account.subdivision,
        "at": report.at.isoformat(),
        "viral_item": plan.items[report.viral_item].id if report.viral_item is not None else None,
        "incident_type": report.incident_type.value,
        "escalate": report.escalate,
        "files": [
            {
                "item": plan.items[planned.item].id,
                "media": plan.items[planned.item].media,
                "name": planned.name,
                "file_id": file_ids[k],
                "size": len(data),
                **simmedia.digest(data),
                "transform": planned.transform.as_dict(),
                "pdq_from_original": renderer.pdq_distance(planned, data),
                "classification": planned.classification.value if planned.classification else None,
            }
            for k, (planned, data) in enumerate(files)
        ],
    }


def check_url(url: str, *, allow_remote: bool = False) -> str:
    """``url`` when it is an http(s) URL a simulation may be sent to: a loopback host
    unless ``allow_remote``, and never NCMEC's CyberTipline."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise InputError(f"simulate: {url!r} is not an http(s) URL")
    if host == "cybertip.org" or host.endswith(".cybertip.org"):
        raise InputError("simulate: simulated reports are never sent to NCMEC's CyberTipline")
    if not allow_remote:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InputError(
                f"simulate: {host} is not a loopback address; pass allow_remote to send "
                "simulated reports to another machine"
            )
    return url


def simulate(
    spec: SimulationSpec,
    *,
    url: str | None,
    credentials: dict[str, str],
    truth_path: Path,
    geo_path: Path | None = None,
    allow_remote: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RunStats:
    """Plan ``spec``, submit it to the ISPWS service at ``url`` (None: render only) with
    one account per provider (``credentials``: name -> password), write the truth as
    JSON lines to ``truth_path`` and, when asked, the synthetic geography to
    ``geo_path``."""
    spec.check()
    missing = [p for p in spec.providers if p not in credentials] if url else []
    if missing:
        raise InputError(f"simulate: no password for provider(s) {', '.join(missing)}")
    if url is not None:
        check_url(url, allow_remote=allow_remote)
    the_plan = plan(spec)
    if geo_path is not None:
        write_geo_database(the_plan, geo_path)
    clients = (
        {name: IspwsClient(url, name, credentials[name]) for name in spec.providers}
        if url is not None
        else None
    )
    try:
        with truth_path.open("w", encoding="utf-8") as truth:
            return run(the_plan, clients, truth, progress=progress)
    finally:
        for client in (clients or {}).values():
            client.close()


def write_geo_database(plan: Plan, path: Path) -> Path:
    """The plan's synthetic geography as a MaxMind-format database (GeoLite2-City
    fields: ``country.iso_code``, ``subdivisions[0].iso_code``)."""
    writer_module = require("mmdb_writer")
    netaddr = require("netaddr")
    writer = writer_module.MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="tipline-simulated-City",
        languages=["en"],
        description="tipline simulate: synthetic geography (not real allocations)",
    )
    for region, cidr in plan.geography.items():
        country, _, sub = region.partition("-")
        record: dict[str, Any] = {"country": {"iso_code": country, "names": {"en": country}}}
        if sub:
            record["subdivisions"] = [{"iso_code": sub, "names": {"en": sub}}]
        writer.insert_network(netaddr.IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path
