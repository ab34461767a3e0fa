"""Helpers shared by the report delivery tests and the crash driver."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from _clock import HANG_SECONDS
from _report_samples import REPORTER, T0
from tipline.services.jobs import Backoff
from tipline.services.reports import service
from tipline.services.reports.client import IspwsClient
from tipline.services.reports.evidence import DirectoryEvidence
from tipline.services.reports.model import (
    IncidentType,
    IpCapture,
    IpEvent,
    ReportContent,
    ReportedFile,
    ReportedUser,
)
from tipline.services.reports.outbox import Deliverer, DeliveryPolicy, DeliveryStats, StepHook
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.models import import_all_models


def open_db(url: str, *, migrate: bool = True) -> tuple[Engine, sessionmaker[Session]]:
    import_all_models()
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    return engine, session_factory(engine)


def queue_reports(
    sessions: sessionmaker[Session],
    evidence: DirectoryEvidence,
    count: int,
    *,
    seed: int = 1,
    max_files: int = 2,
    file_bytes: int = 2048,
) -> list[str]:
    """Queue ``count`` reports of 1..max_files random (benign) files each."""
    rng = random.Random(seed)
    ids = []
    with transaction(sessions) as session:
        for n in range(count):
            files = []
            evidence_ids = []
            for k in range(rng.randint(1, max_files)):
                data = rng.randbytes(file_bytes) + f"{n}/{k}".encode()
                stored = evidence.put(data, file_name=f"upload-{n}-{k}.jpg")
                d = service.digests(data)
                files.append(
                    ReportedFile(
                        file_name=stored.file_name,
                        md5=d.md5,
                        sha1=d.sha1,
                        size=d.size,
                        viewed_by_esp=n % 2 == 0,
                        exif_viewed_by_esp=False,
                        uploaded_at=T0,
                        upload_ip=IpCapture(
                            ip="192.0.2.10", event=IpEvent.UPLOAD, at=T0, port=40000 + n
                        ),
                    )
                )
                evidence_ids.append(stored.evidence_id)
            content = ReportContent(
                report_id=service.new_report_id(),
                incident_type=IncidentType.CHILD_PORNOGRAPHY,
                incident_at=T0,
                reporter=REPORTER,
                files=tuple(files),
                users=(ReportedUser(esp_identifier=f"user-{n}"),),
            )
            row = service.queue_report(
                session,
                content,
                evidence_ids,
                kind=service.ReportKind.REVIEW,
                source=f"test:{n}",
                tenant=None,
                actor="test",
                evidence=evidence,
            )
            ids.append(row.id)
    return ids


FAST_RETRY = DeliveryPolicy(
    max_attempts=10_000, backoff=Backoff(base=0.002, maximum=0.02, jitter=0.5), lease_seconds=120
)


def deliverer(
    sessions: sessionmaker[Session],
    evidence_dir: Path,
    url: str,
    username: str,
    password: str,
    *,
    timeout: float = HANG_SECONDS,
    policy: DeliveryPolicy = FAST_RETRY,
    on_step: StepHook | None = None,
    seed: int = 0,
) -> Deliverer:
    """A deliverer to ``url``; its HTTP timeout only catches a hang unless a test of
    timeouts passes its own (a loaded machine answers in seconds: a resent report)."""
    client = IspwsClient(url, username, password, timeout=timeout)
    return Deliverer(
        sessions,
        client,
        DirectoryEvidence(evidence_dir),
        policy=replace(policy),
        on_step=on_step,
        rng=random.Random(seed),
    )


def run(d: Deliverer, **kwargs: object) -> DeliveryStats:
    """Run ``d`` until idle and close its client."""
    kwargs.setdefault("poll_seconds", 0.05)
    try:
        return d.run(**kwargs)  # type: ignore[arg-type]
    finally:
        d.client.close()
