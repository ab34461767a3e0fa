"""The evidence vault: reported files and report XML, preserved encrypted.

* Format and crypto: :mod:`~tipline.services.vault._format` (chunked AES-256-GCM, one
  random data key per item) and :mod:`~tipline.services.vault.keys` (data keys wrapped
  by a master key from the environment or a key file; rotation rewraps only).
* Items: :mod:`~tipline.services.vault.items` (store inside the caller's transaction,
  list, show, read; every read needs ``evidence.read`` and is audited first).
* Retention: :mod:`~tipline.services.vault.retention` (1 year from the report by
  default, extendable; legal holds; the purge job for the job runner).
* Integrity: :mod:`~tipline.services.vault.integrity` (verify every item; key rotation).

18 U.S.C. 2258A(h) as amended by the REPORT Act asks providers to preserve a report's
contents and material for one year and to secure them following the NIST
Cybersecurity Framework; this package is where tipline does that.
"""

from __future__ import annotations

from tipline.services.vault._model import TARGET, EvidenceInfo, EvidenceKind, HoldInfo, Vault
from tipline.services.vault.integrity import RotateReport, VerifyReport, rotate_key, verify
from tipline.services.vault.items import (
    ITEM_COLUMNS,
    NewItem,
    SealedFile,
    Source,
    discard,
    keep_for_report,
    keep_for_review,
    list_items,
    mark_reported,
    new_item,
    open_content,
    read_bytes,
    read_to_file,
    seal,
    show,
    store,
    sync_files,
)
from tipline.services.vault.keys import Keyring, MasterKey
from tipline.services.vault.retention import (
    PURGE_JOB_KIND,
    PurgeReport,
    enqueue_purge,
    ensure_purge_scheduled,
    extend_retention,
    next_purge_time,
    place_hold,
    purge,
    purge_handler,
    purge_unreported_media,
    release_hold,
    schedule_purge,
)

__all__ = [
    "ITEM_COLUMNS",
    "PURGE_JOB_KIND",
    "TARGET",
    "EvidenceInfo",
    "EvidenceKind",
    "HoldInfo",
    "Keyring",
    "MasterKey",
    "NewItem",
    "PurgeReport",
    "RotateReport",
    "SealedFile",
    "Source",
    "Vault",
    "VerifyReport",
    "discard",
    "enqueue_purge",
    "ensure_purge_scheduled",
    "extend_retention",
    "keep_for_report",
    "keep_for_review",
    "list_items",
    "mark_reported",
    "new_item",
    "next_purge_time",
    "open_content",
    "place_hold",
    "purge",
    "purge_handler",
    "purge_unreported_media",
    "read_bytes",
    "read_to_file",
    "release_hold",
    "rotate_key",
    "schedule_purge",
    "seal",
    "show",
    "store",
    "sync_files",
    "verify",
]
