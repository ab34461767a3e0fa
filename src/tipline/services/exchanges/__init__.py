"""Hash exchanges: sync shared hash lists into banks, and publish tipline's own feed.

- ``model.py``: deltas, pages, checkpoints, the adapter protocol
- ``configure.py``: add / list / enable / reset / remove exchanges (audited)
- ``sync.py``: pull pages and apply each with its checkpoint in one transaction
- ``apply.py``: the upsert of a page into banks
- ``schedule.py``: scheduled syncs through the job runner (``tipline worker``)
- ``feed.py`` / ``feed_client.py`` / ``signing.py``: the Ed25519-signed tipline feed
- ``http.py``: bounded GETs with retries; ``credentials.py``: secrets from env or file
"""

from __future__ import annotations

from tipline.errors import ExchangeError, FeedRefusedError
from tipline.services.exchanges.configure import (
    ExchangeStatus,
    add_exchange,
    exchange_status,
    list_exchanges,
    remove_exchange,
    reset_exchange,
    set_enabled,
)
from tipline.services.exchanges.feed import Publisher, page_of
from tipline.services.exchanges.model import Delta, ExchangeSpec, Page, Totals
from tipline.services.exchanges.registry import KINDS
from tipline.services.exchanges.schedule import (
    SYNC_JOB_KIND,
    ensure_scheduled,
    request_sync,
    sync_handler,
)
from tipline.services.exchanges.signing import SigningKey, VerifyKey
from tipline.services.exchanges.sync import SyncReport, probe_exchange, sync_exchange

__all__ = [
    "KINDS",
    "SYNC_JOB_KIND",
    "Delta",
    "ExchangeError",
    "ExchangeSpec",
    "ExchangeStatus",
    "FeedRefusedError",
    "Page",
    "Publisher",
    "SigningKey",
    "SyncReport",
    "Totals",
    "VerifyKey",
    "add_exchange",
    "ensure_scheduled",
    "exchange_status",
    "list_exchanges",
    "page_of",
    "probe_exchange",
    "remove_exchange",
    "request_sync",
    "reset_exchange",
    "set_enabled",
    "sync_exchange",
    "sync_handler",
]
