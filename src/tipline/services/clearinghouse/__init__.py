"""The clearinghouse role: the CyberTipline-compatible intake (ISPWS) and its
reporting-provider accounts (:mod:`.intake`, :mod:`.providers`); de-duplication,
clusters, report links and triage of finished reports (:mod:`.pipeline` over
:mod:`.dedup`, :mod:`.clusters`, :mod:`.links`, :mod:`.triage`).

The names below load their module on first use: a process that needs one part (a
worker's triage job, ``tipline provider``) does not import the intake's hashing or the
match index with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tipline.services.clearinghouse.answers import Code, IspwsAnswer
    from tipline.services.clearinghouse.intake import (
        Intake,
        IntakeAuthError,
        fileinfo,
        finish,
        intake_hash_options,
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
        triage_report,
    )
    from tipline.services.clearinghouse.providers import (
        ProviderInfo,
        add_provider,
        disable_provider,
        list_providers,
    )
    from tipline.services.clearinghouse.triage import TRIAGE_JOB_KIND
    from tipline.services.clearinghouse.triage_job import triage_handler

#: each exported name -> the module of this package that defines it
_HOMES = {
    "Code": "answers",
    "IspwsAnswer": "answers",
    "Intake": "intake",
    "IntakeAuthError": "intake",
    "intake_hash_options": "intake",
    "fileinfo": "intake",
    "finish": "intake",
    "retract": "intake",
    "schema": "intake",
    "status": "intake",
    "submit": "intake",
    "upload": "intake",
    "TriageOutcome": "pipeline",
    "Triager": "pipeline",
    "TriageWorker": "pipeline",
    "check_triage_settings": "pipeline",
    "triage_report": "pipeline",
    "ProviderInfo": "providers",
    "add_provider": "providers",
    "disable_provider": "providers",
    "list_providers": "providers",
    "TRIAGE_JOB_KIND": "triage",
    "triage_handler": "triage_job",
}

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
    "intake_hash_options",
    "list_providers",
    "retract",
    "schema",
    "status",
    "submit",
    "triage_handler",
    "triage_report",
    "upload",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next look-up is an ordinary one
    return value
