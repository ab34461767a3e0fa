"""Exchange kinds: how each checks its configuration and builds its adapter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tipline.errors import InputError
from tipline.services.exchanges import feed_client, ncmec, threatexchange
from tipline.services.exchanges.credentials import read_credential
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import ExchangeAdapter, ExchangeSpec


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of exchange."""

    name: str
    description: str
    #: validate and normalise the non-secret configuration (ConfigError when bad)
    check_config: Callable[[Mapping[str, Any]], dict[str, Any]]
    #: the adapter of a spec, given a fetcher and the credential (it sets the auth header)
    build: Callable[[ExchangeSpec, Fetcher, str], ExchangeAdapter]


def _feed_adapter(spec: ExchangeSpec, fetcher: Fetcher, secret: str) -> ExchangeAdapter:
    fetcher.headers = {**fetcher.headers, "Authorization": f"Bearer {secret}"}
    return feed_client.FeedAdapter(spec, fetcher)


def _te_adapter(spec: ExchangeSpec, fetcher: Fetcher, secret: str) -> ExchangeAdapter:
    return threatexchange.ThreatExchangeAdapter(spec, fetcher, token=secret)


def _ncmec_adapter(spec: ExchangeSpec, fetcher: Fetcher, secret: str) -> ExchangeAdapter:
    return ncmec.NcmecAdapter(spec, fetcher, password=secret)


KINDS: dict[str, Kind] = {
    feed_client.KIND: Kind(
        feed_client.KIND,
        "another tipline service's signed hash feed (Ed25519)",
        feed_client.check_config,
        _feed_adapter,
    ),
    ncmec.KIND: Kind(
        ncmec.KIND,
        "NCMEC hash sharing API v2 (entries by time window, deletions, feedback)",
        ncmec.check_config,
        _ncmec_adapter,
    ),
    threatexchange.KIND: Kind(
        threatexchange.KIND,
        "Meta ThreatExchange threat updates of a privacy group (PDQ, MD5)",
        threatexchange.check_config,
        _te_adapter,
    ),
}


def kind_of(name: str) -> Kind:
    """The kind called ``name`` (InputError naming the known kinds otherwise)."""
    try:
        return KINDS[name]
    except KeyError:
        raise InputError(
            f"unknown exchange kind {name!r}; known: {', '.join(sorted(KINDS))}"
        ) from None


def build_adapter(spec: ExchangeSpec, *, fetcher: Fetcher | None = None) -> ExchangeAdapter:
    """The adapter of ``spec``, its credential read now (ConfigError when missing)."""
    kind = kind_of(spec.kind)
    secret = read_credential(spec)
    assert secret is not None
    return kind.build(spec, fetcher or Fetcher(spec.name), secret)
