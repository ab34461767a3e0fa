"""The triage score of a finished report: a sum of named factors, each shown with its
weight, so an analyst sees why a report sits where it does in the queue.

A factor's ``points`` are ``weight * value``; ``value`` is 1 for a yes/no factor and a
share in [0, 1] for the graded ones (linked reports up to ``link_cap``, recency of the
incident at receipt). Only factors that apply are listed. Weights come from the
settings (``TIPLINE_TRIAGE_WEIGHTS``, defaults in :data:`tipline.config.TRIAGE_WEIGHTS`).

Never-seen material weighs most by default: a file that matches no known hash list and
no file any provider reported before may show a child not yet identified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tipline.config import TRIAGE_WEIGHTS, Settings
from tipline.errors import ConfigError
from tipline.services.clearinghouse.facts import FileFacts, ReportFacts

#: NCMEC's incident types -> the weight name of each
INCIDENT_KEYS: dict[str, str] = {
    "Online Enticement of Children for Sexual Acts": "incident.online_enticement",
    "Child Sex Trafficking": "incident.child_sex_trafficking",
    "Child Sexual Molestation": "incident.child_sexual_molestation",
    "Child Sex Tourism": "incident.child_sex_tourism",
    "Unsolicited Obscene Material Sent to a Child": "incident.unsolicited_obscene_material",
    "Child Pornography (possession, manufacture, and distribution)": ("incident.child_pornography"),
    "Misleading Domain Name": "incident.misleading_domain_name",
    "Misleading Words or Digital Images on the Internet": "incident.misleading_words_or_images",
}
#: industry classifications, most severe first
CLASSIFICATIONS = ("A1", "A2", "B1", "B2")

#: the job that de-duplicates and triages a finished report (queued by the intake's finish)
TRIAGE_JOB_KIND = "clearinghouse.triage"


@dataclass(frozen=True, slots=True)
class Factor:
    """One reason for a report's score."""

    name: str
    weight: float
    value: float
    detail: str

    @property
    def points(self) -> float:
        """What the factor adds to the score (``weight * value``)."""
        return round(self.weight * self.value, 3)

    def as_json(self) -> dict[str, Any]:
        """The factor as stored and shown: name, weight, value, points, detail."""
        return {
            "name": self.name,
            "weight": self.weight,
            "value": round(self.value, 4),
            "points": self.points,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class TriagePolicy:
    """Weights by factor name, and the scales of the graded factors."""

    weights: Mapping[str, float]
    #: linked reports at which the link factor is full
    link_cap: int = 5
    #: incident age (days, at receipt) at which recency reaches zero
    recency_days: float = 30.0

    @classmethod
    def of(cls, settings: Settings) -> TriagePolicy:
        """The policy of ``settings`` (:class:`ConfigError` naming unknown weights)."""
        unknown = sorted(set(settings.triage_weights) - set(TRIAGE_WEIGHTS))
        if unknown:
            raise ConfigError(
                f"unknown triage weights: {', '.join(unknown)} (see docs/clearinghouse.md)"
            )
        return cls(
            weights={**TRIAGE_WEIGHTS, **settings.triage_weights},
            link_cap=settings.triage_link_cap,
            recency_days=settings.triage_recency_days,
        )

    def weight(self, name: str) -> float:
        """The weight of ``name`` (0 for a name without one)."""
        return float(self.weights.get(name, 0.0))


@dataclass(frozen=True, slots=True)
class FileTriage:
    """What triage needs of one file: its de-duplication state and facts."""

    state: str  # known | seen | new
    facts: FileFacts
    #: labels of the known-bank entries it matched (e.g. an industry classification)
    known_labels: tuple[str, ...] = ()


def score(
    policy: TriagePolicy,
    report: ReportFacts,
    files: Sequence[FileTriage],
    *,
    linked_reports: int,
    received_at: datetime,
) -> tuple[float, list[Factor]]:
    """The score of a report and the factors that make it up."""
    factors: list[Factor] = []

    def add(name: str, detail: str, value: float = 1.0) -> None:
        if value > 0:
            factors.append(Factor(name, policy.weight(name), value, detail))

    total = len(files)
    new = sum(1 for f in files if f.state == "new")
    known = sum(1 for f in files if f.state == "known")
    if new:
        add("new_material", f"{new} of {total} files match no hash list and no earlier report")
    if known:
        add("known_material", f"{known} of {total} files match a known hash list")
    _classification(add, files)
    if report.escalation:
        add("escalated", f"escalateToHighPriority: {report.escalation[:200]}")
    if report.incident_type in INCIDENT_KEYS:
        add(INCIDENT_KEYS[report.incident_type], f"incident type: {report.incident_type}")
    for annotation in report.annotations:
        if f"report.{annotation}" in policy.weights:
            add(f"report.{annotation}", f"report annotation {annotation}")
    file_annotations: dict[str, int] = {}
    for f in files:
        for annotation in f.facts.annotations:
            file_annotations[annotation] = file_annotations.get(annotation, 0) + 1
    for annotation, count in sorted(file_annotations.items()):
        if f"file.{annotation}" in policy.weights:
            add(f"file.{annotation}", f"file annotation {annotation} on {count} of {total} files")
    if linked_reports:
        add(
            "linked_reports",
            f"{linked_reports} other reports share an account, email, IP or device",
            min(linked_reports, policy.link_cap) / policy.link_cap,
        )
    if report.incident_at is not None:
        age_days = max(0.0, (received_at - report.incident_at).total_seconds() / 86400.0)
        add(
            "recency",
            f"incident {age_days:.1f} days before receipt",
            max(0.0, 1.0 - age_days / policy.recency_days),
        )
    if report.batched:
        add("batched", f"batched report ({report.batched})")
    return round(sum(f.points for f in factors), 3), factors


def _classification(add: Any, files: Sequence[FileTriage]) -> None:
    """The most severe industry classification given by the provider or by a matched
    known-bank entry's labels."""
    found: dict[str, str] = {}
    for f in files:
        if f.facts.classification in CLASSIFICATIONS:
            found.setdefault(f.facts.classification, "the provider's fileDetails")
        for label in f.known_labels:
            if label.upper() in CLASSIFICATIONS:
                found.setdefault(label.upper(), "a known hash list entry")
    for name in CLASSIFICATIONS:
        if name in found:
            add(f"classification.{name}", f"industry classification {name} ({found[name]})")
            return
