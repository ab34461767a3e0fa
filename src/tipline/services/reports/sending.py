"""What ``tipline report deliver`` does in one run: release the held viral bundles
whose hold is over, then deliver every queued report.

A deployment that runs no ``tipline worker`` (so no ``report.release`` job) still sends
its bundles: the release is the job's own function, :func:`viral.release_due`, and the
delivery is :func:`service.deliver`. This module sits above both, since
:mod:`.viral` builds its reports with :mod:`.service`."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.services.reports import service, viral
from tipline.services.reports.outbox import DeliveryStats, StepHook


def deliver_due(
    sessions: sessionmaker[Session],
    *,
    settings: Settings,
    workers: int = 1,
    on_step: StepHook | None = None,
    wait_for_retries: bool = True,
) -> DeliveryStats:
    """Release the due viral bundles, then :func:`service.deliver` every queued report
    (the bundles just released included)."""
    evidence = service.evidence_from_settings(sessions, settings)
    viral.release_due(sessions, settings, evidence)
    return service.deliver(
        sessions,
        settings=settings,
        evidence=evidence,
        workers=workers,
        on_step=on_step,
        wait_for_retries=wait_for_retries,
    )
