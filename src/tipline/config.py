"""One typed settings object; environment variables use the ``TIPLINE_`` prefix."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Default triage weights (points a factor adds to a report's score when it applies
#: fully); ``TIPLINE_TRIAGE_WEIGHTS`` (JSON) overrides some or all of them. Names:
#: see docs/clearinghouse.md.
TRIAGE_WEIGHTS: dict[str, float] = {
    "new_material": 100.0,
    "known_material": 5.0,
    "classification.A1": 40.0,
    "classification.A2": 30.0,
    "classification.B1": 10.0,
    "classification.B2": 5.0,
    "escalated": 60.0,
    "incident.online_enticement": 40.0,
    "incident.child_sex_trafficking": 40.0,
    "incident.child_sexual_molestation": 30.0,
    "incident.child_sex_tourism": 25.0,
    "incident.unsolicited_obscene_material": 20.0,
    "incident.child_pornography": 0.0,
    "incident.misleading_domain_name": 0.0,
    "incident.misleading_words_or_images": 0.0,
    "report.sextortion": 40.0,
    "report.sadisticOnlineExploitation": 40.0,
    "report.csamSolicitation": 20.0,
    "report.minorToMinorInteraction": 0.0,
    "report.spam": -20.0,
    "file.liveStreaming": 40.0,
    "file.infant": 40.0,
    "file.physicalHarm": 20.0,
    "file.violenceGore": 10.0,
    "file.bestiality": 10.0,
    "file.possibleSelfProduction": 10.0,
    "file.generativeAi": 0.0,
    "file.animeDrawingVirtualHentai": -10.0,
    "file.potentialMeme": -20.0,
    "file.viral": -20.0,
    "linked_reports": 30.0,
    "recency": 20.0,
    "batched": -120.0,
}


class RoutingAgency(BaseModel):
    """An agency reports can be referred to."""

    name: str = Field(description="Display name written in referral packages")
    media: bool = Field(
        default=False, description="Referral packages to this agency may carry the media files"
    )
    contact: str | None = Field(default=None, description="Contact written in packages")


class RoutingTable(BaseModel):
    """Where a located report goes: keys are agency ids of ``agencies``.

    Rules in order: ``subdivisions`` (ISO 3166-2, e.g. ``US-CA`` for a US state's ICAC
    task force), ``countries`` (ISO 3166-1 alpha-2), ``fallback`` (located, no rule),
    ``unlocated`` (no IP of the report could be located; default ``fallback``).
    """

    agencies: dict[str, RoutingAgency] = Field(default_factory=dict)
    countries: dict[str, str] = Field(default_factory=dict)
    subdivisions: dict[str, str] = Field(default_factory=dict)
    fallback: str | None = None
    unlocated: str | None = None


class Settings(BaseSettings):
    """Every setting tipline reads. Secrets come from the environment only."""

    model_config = SettingsConfigDict(env_prefix="TIPLINE_", extra="ignore")

    data_dir: Path = Field(default=Path("tipline-data"), description="Embedded data folder")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is SQLite at <data_dir>/tipline.db",
    )
    max_image_pixels: int = Field(
        default=200_000_000, description="Refuse images above this many pixels (bomb guard)"
    )
    decode_budget_pixels: int = Field(
        default=250_000_000,
        description="HTTP API: decoded pixels one worker process may hold at once over all "
        "its image decodes; an upload that does not fit gets 503 with Retry-After",
    )
    max_file_bytes: int = Field(
        default=2 * 1024**3, description="Refuse media files above this many bytes"
    )
    max_video_seconds: float = Field(default=4 * 3600.0, description="Refuse longer videos")
    index_dir: Path | None = Field(
        default=None, description="Index files; default <data_dir>/index"
    )
    max_body_bytes: int = Field(
        default=64 * 1024**2, description="HTTP API: refuse request bodies above this many bytes"
    )
    fetch_max_bytes: int = Field(
        default=64 * 1024**2, description="URL fetching: refuse media above this many bytes"
    )
    fetch_timeout_seconds: float = Field(
        default=30.0, description="URL fetching: total time limit per URL, seconds"
    )
    fetch_max_redirects: int = Field(default=5, description="URL fetching: redirects followed")
    match_poll_seconds: float = Field(
        default=0.0,
        description="HTTP API: longest a match may rely on the last look for new bank "
        "signals, seconds (0 = look on every request)",
    )
    fetch_allow_private: list[str] = Field(
        default_factory=list,
        description="URL fetching: CIDRs allowed despite being private/loopback (tests only)",
    )

    vault_dir: Path | None = Field(
        default=None, description="Evidence vault: encrypted files; default <data_dir>/vault"
    )
    vault_master_key: SecretStr | None = Field(
        default=None,
        description="Evidence vault: master key, base64 of 32 bytes (environment only)",
    )
    vault_master_key_file: Path | None = Field(
        default=None,
        description="Evidence vault: file holding the base64 master key (mode 0600)",
    )
    vault_new_master_key: SecretStr | None = Field(
        default=None,
        description="Evidence vault: the key `tipline vault rotate-key` rewraps items to",
    )
    vault_new_master_key_file: Path | None = Field(
        default=None, description="Evidence vault: file holding the new master key"
    )
    vault_retention_days: int = Field(
        default=365,
        ge=1,
        description="Evidence vault: days an item is kept after its report (or storage)",
    )
    vault_chunk_bytes: int = Field(
        default=1024**2,
        ge=4096,
        le=64 * 1024**2,
        description="Evidence vault: plaintext bytes per encrypted chunk (memory per stream)",
    )

    report_ispws_url: str | None = Field(
        default=None,
        description="Reports: ISPWS base URL (e.g. https://exttest.cybertip.org/ispws)",
    )
    report_ispws_username: str | None = Field(
        default=None, description="Reports: ISPWS account name"
    )
    report_ispws_password: SecretStr | None = Field(
        default=None, description="Reports: ISPWS account password (environment only)"
    )
    report_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Reports: time limit of one ISPWS call, seconds"
    )
    report_max_attempts: int = Field(
        default=12, ge=1, description="Reports: failed attempts in a row before the operator queue"
    )
    report_retry_base_seconds: float = Field(
        default=2.0, gt=0, description="Reports: first retry delay, seconds (doubles, jittered)"
    )
    report_retry_max_seconds: float = Field(
        default=900.0, gt=0, description="Reports: longest retry delay, seconds"
    )
    report_reporter_email: str | None = Field(
        default=None, description="Reports: the reporting person's email (required to report)"
    )
    report_reporter_first_name: str | None = Field(default=None, description="Reports: reporter")
    report_reporter_last_name: str | None = Field(default=None, description="Reports: reporter")
    report_reporter_phone: str | None = Field(default=None, description="Reports: reporter")
    report_company_template: str | None = Field(
        default=None, description="Reports: companyTemplate text"
    )
    report_terms_of_service: str | None = Field(
        default=None, description="Reports: termsOfService text"
    )
    report_legal_url: str | None = Field(default=None, description="Reports: legalURL")
    report_platform: str | None = Field(
        default=None, description="Reports: platform / espService name written in reports"
    )
    report_auto_banks: list[str] = Field(
        default_factory=list,
        description="Reports: banks whose entries a trusted source confirmed; an exact "
        "digest match of one is reported without review (file marked NOT viewed)",
    )
    report_viral_window_seconds: float = Field(
        default=86400.0, gt=0, description="Reports: viral bundling window, seconds"
    )
    report_viral_threshold: int = Field(
        default=50,
        ge=2,
        description="Reports: distinct uploaders of one perceptual cluster within the "
        "window that make a viral bundle (one batched report)",
    )
    report_viral_max_distance: int = Field(
        default=31, ge=0, le=255, description="Reports: PDQ bits for one perceptual cluster"
    )
    report_viral_hold_seconds: float = Field(
        default=600.0,
        ge=0,
        description="Reports: how long a match-time auto-report of a picture waits (at "
        "most; never beyond the viral window) to collect the other uploads of its "
        "perceptual cluster into one report before delivery; 0 turns match-time "
        "bundling off",
    )
    report_viral_max_files: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Reports: most files in one bundled report; a match-time bundle that "
        "reaches it is released at once and the cluster's next upload starts a new one",
    )
    report_urgent_banks: list[str] = Field(
        default_factory=list,
        description="Reports: banks whose auto-reports are urgent: never held nor "
        "bundled, queued for delivery at once",
    )

    role: Literal["provider", "clearinghouse", "both"] = Field(
        default="provider",
        description="Service role: provider (match, review, report), clearinghouse "
        "(the CyberTipline-compatible intake under /ispws) or both",
    )
    intake_max_file_bytes: int = Field(
        default=48 * 1024**2,
        ge=1,
        description="Clearinghouse intake: largest uploaded file, bytes (keep it under "
        "max_body_bytes)",
    )
    intake_max_xml_bytes: int = Field(
        default=4 * 1024**2, ge=1, description="Clearinghouse intake: largest XML document, bytes"
    )
    intake_hash_processes: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Clearinghouse intake: processes hashing uploaded files beside each "
        "serving process (0 = in the request's thread, holding the GIL during PDQ)",
    )
    intake_decode: Literal["fast", "exact"] = Field(
        default="fast",
        description="Clearinghouse intake: how photos are decoded for PDQ: fast (reduced "
        "JPEG decode, as every query; a few bits from the reference) or exact (the "
        "reference decode, ~10x the CPU). Photos an analyst confirms are hashed again "
        "with the reference decode when published either way",
    )
    hma_compat_role: Literal["hasher", "matcher", "curator"] | None = Field(
        default=None,
        description="HMA compatibility: role given to requests WITHOUT an API key on the "
        "HMA routes (/h, /m, /c) from hma_compat_networks; unset (the default) = a key is "
        "required, as everywhere else",
    )
    hma_compat_tenant: str | None = Field(
        default=None,
        description="HMA compatibility: tenant of keyless HMA requests (unset = none)",
    )
    hma_plain_errors: bool = Field(
        default=False,
        description="HMA compatibility: errors on the HMA routes are HMA's plain "
        '{"message": ...} (application/json) instead of problem documents',
    )
    hma_compat_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="HMA compatibility: CIDRs keyless HMA requests may come from "
        "(default: loopback only)",
    )

    @field_validator("hma_compat_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)  # ValueError -> a settings error
        return value

    geoip_database: Path | None = Field(
        default=None,
        description="Clearinghouse routing: MaxMind-format IP geolocation database "
        "(GeoLite2/GeoIP2 City or Country .mmdb)",
    )
    routing_table: RoutingTable = Field(
        default_factory=RoutingTable,
        description="Clearinghouse routing: agencies and rules (JSON: agencies, countries, "
        "subdivisions, fallback, unlocated)",
    )
    routing_table_file: Path | None = Field(
        default=None,
        description="Clearinghouse routing: JSON file holding the routing table (replaces "
        "routing_table when set)",
    )
    feed_banks: list[str] = Field(
        default_factory=list,
        description="Hash feed: banks published at /v1/feeds/<bank> (clearinghouse role)",
    )
    feed_signing_key: SecretStr | None = Field(
        default=None,
        description="Hash feed: Ed25519 private key, base64 of 32 bytes (environment only)",
    )
    feed_signing_key_file: Path | None = Field(
        default=None, description="Hash feed: file holding the base64 signing key (mode 0600)"
    )
    clearinghouse_pdq_distance: int = Field(
        default=31,
        ge=0,
        le=255,
        description="Clearinghouse: PDQ bits within which two received photos are the "
        "same picture (one cluster)",
    )
    clearinghouse_vpdq_distance: int = Field(
        default=20,
        ge=0,
        le=100,
        description="Clearinghouse: vPDQ distance (100 minus the matched share of "
        "frames, percent) within which two received videos are one cluster",
    )
    clearinghouse_min_pdq_quality: int = Field(
        default=50,
        ge=0,
        le=100,
        description="Clearinghouse: PDQ quality under which a photo is de-duplicated by "
        "its digests only (flat pictures collide)",
    )
    clearinghouse_near_copy_bits: int = Field(
        default=8,
        ge=0,
        le=255,
        description="Clearinghouse: a photo within this many PDQ bits of an indexed "
        "file (or an exact copy of one) is represented by it and not indexed itself",
    )
    clearinghouse_publish_bank: str = Field(
        default="clearinghouse-confirmed",
        description="Clearinghouse: the bank (hash list) that confirmed new material goes into",
    )
    clearinghouse_triage_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Clearinghouse: the serving process triages a finished report at "
        "once; the crash-safe job that would redo it is due this many seconds later",
    )
    triage_weights: dict[str, float] = Field(
        default_factory=lambda: dict(TRIAGE_WEIGHTS),
        description="Clearinghouse triage: points per factor (JSON object; the names "
        "given override the defaults)",
    )
    triage_link_cap: int = Field(
        default=5,
        ge=1,
        description="Clearinghouse triage: linked reports at which the link factor is full",
    )
    triage_recency_days: float = Field(
        default=30.0,
        gt=0,
        description="Clearinghouse triage: incident age (days, at receipt) at which the "
        "recency factor reaches zero",
    )

    web_cookie_secure: bool = Field(
        default=True,
        description="Web UI: mark cookies Secure (HTTPS only); false only for plain-HTTP "
        "development on a loopback address",
    )
    web_session_idle_minutes: float = Field(
        default=30.0, gt=0, description="Web UI: a session unused this long ends, minutes"
    )
    web_session_max_hours: float = Field(
        default=12.0, gt=0, description="Web UI: longest life of a session, hours"
    )
    web_media_url_seconds: int = Field(
        default=120, ge=5, le=3600, description="Web UI: life of a signed media URL, seconds"
    )
    web_review_lease_seconds: int = Field(
        default=900,
        ge=30,
        description="Web UI: how long opening a review item reserves it for one reviewer, "
        "seconds (renewed by every action on it)",
    )
    web_daily_exposure_limit: int = Field(
        default=100,
        ge=0,
        description="Web UI: items a reviewer may reveal (unblur) per UTC day; a reviewer's "
        "own limit may be lower",
    )
    web_break_minutes: float = Field(
        default=50.0,
        gt=0,
        description="Web UI: after this many minutes in one session every page suggests a break",
    )
    review_two_person_unmatched: bool = Field(
        default=False,
        description="Review: an item that matched no bank (sent to review by "
        "POST /v1/submissions/{id}/review) is confirmed only when two different reviewers "
        "confirm it; the first confirmation waits for the second",
    )
    web_review_bank_severity: dict[str, int] = Field(
        default_factory=dict,
        description="Web UI: queue priority of each bank (higher first; default 0), as JSON",
    )

    def resolved_database_url(self) -> str:
        """The database URL in use (SQLite under ``data_dir`` when unset)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tipline.db').as_posix()}"

    def resolved_vault_dir(self) -> Path:
        """Folder for the evidence vault's encrypted files."""
        return self.vault_dir if self.vault_dir is not None else self.data_dir / "vault"

    def resolved_index_dir(self) -> Path:
        """Folder for index files."""
        return self.index_dir if self.index_dir is not None else self.data_dir / "index"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
