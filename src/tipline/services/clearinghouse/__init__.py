"""The clearinghouse role: the CyberTipline-compatible intake (ISPWS) and its
reporting-provider accounts. De-duplication, triage and routing come later."""

from __future__ import annotations

from tipline.services.clearinghouse.answers import Code, IspwsAnswer
from tipline.services.clearinghouse.intake import (
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
from tipline.services.clearinghouse.providers import (
    ProviderInfo,
    add_provider,
    disable_provider,
    list_providers,
)

__all__ = [
    "Code",
    "Intake",
    "IntakeAuthError",
    "IspwsAnswer",
    "ProviderInfo",
    "add_provider",
    "disable_provider",
    "fileinfo",
    "finish",
    "list_providers",
    "retract",
    "schema",
    "status",
    "submit",
    "upload",
]
