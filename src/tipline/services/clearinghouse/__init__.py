"""The clearinghouse role: the CyberTipline-compatible intake (ISPWS) and its
reporting-provider accounts (:mod:`.intake`, :mod:`.providers`); de-duplication,
clusters, report links and triage of finished reports (:mod:`.pipeline` over
:mod:`.dedup`, :mod:`.clusters`, :mod:`.links`, :mod:`.triage`)."""

from __future__ import annotations

from tipline.services.clearinghouse.answers import Code, IspwsAnswer
from tipline.services.clearinghouse.intake import (
    TRIAGE_JOB_KIND,
    Intake,
    IntakeAuthError,
    fileinfo,
    finish,
    retract,
    schema,
    status,
    submit,
    upload,
)
from tipline.services.clearinghouse.pipeline import (
    TriageOutcome,
    Triager,
    TriageWorker,
    check_triage_settings,
    triage_handler,
    triage_report,
)
from tipline.services.clearinghouse.providers import (
    ProviderInfo,
    add_provider,
    disable_provider,
    list_providers,
)

__all__ = [
    "TRIAGE_JOB_KIND",
    "Code",
    "Intake",
    "IntakeAuthError",
    "IspwsAnswer",
    "ProviderInfo",
    "TriageOutcome",
    "TriageWorker",
    "Triager",
    "add_provider",
    "check_triage_settings",
    "disable_provider",
    "fileinfo",
    "finish",
    "list_providers",
    "retract",
    "schema",
    "status",
    "submit",
    "triage_handler",
    "triage_report",
    "upload",
]
