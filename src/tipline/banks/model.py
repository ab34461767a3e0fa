"""Domain values for banks and their entries (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

#: Banks named with this prefix hold a service's own records rather than known material
#: (the clearinghouse's index of the files it received): Matchers report their hits only
#: when asked to, and people cannot create them.
SYSTEM_BANK_PREFIX = "system:"


def is_system_bank(name: str) -> bool:
    """Whether ``name`` is a system bank's (:data:`SYSTEM_BANK_PREFIX`)."""
    return name.startswith(SYSTEM_BANK_PREFIX)


@dataclass(frozen=True, slots=True)
class BankSignal:
    """One signal of a bank entry: type name and canonical value."""

    type: str
    value: str


@dataclass(frozen=True, slots=True)
class BankEntry:
    """One known item in a bank."""

    bank: str
    entry_id: str  # external id (NCMEC entry id, VICS MediaID, or generated)
    signals: tuple[BankSignal, ...]
    labels: tuple[str, ...] = ()  # e.g. industry classification "A1", "B2"
    source: str | None = None  # provenance: file, feed, member
    added_at: datetime | None = None
    disabled: bool = False
    disabled_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Bank:
    """A named list of known items with its own match settings."""

    name: str
    description: str = ""
    enabled: bool = True
    is_allow_bank: bool = False  # entries here suppress matches (known false positives)
    thresholds: dict[str, int] = field(default_factory=dict)  # per signal type; else default
    tenant: str | None = None
    #: query variants without borders, caption bars and screenshot frames match here too
    normalize: bool = True
    #: the bank-side robust tier: entries added from media also match crops and small
    #: rotations of the original (their region descriptors, :mod:`tipline.signals.regions`)
    region_matching: bool = True
    #: auto-report policy at match time: ``default`` (the bank is reported when listed
    #: in the settings' ``report_auto_banks``), ``off``, ``exact`` or ``trusted``
    #: (:mod:`tipline.banks.auto_report`)
    auto_report: str = "default"
