"""Exchange kinds: how each checks its configuration and builds its adapter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tipline.errors import InputError
from tipline.services.exchanges import feed_client
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
    #: the adapter of a spec, given a fetcher that already carries the credential
    build: Callable[[ExchangeSpec, Fetcher], ExchangeAdapter]
    #: the header the credential goes in, as a format string of the secret
    auth_header: tuple[str, str] | None


def _feed_adapter(spec: ExchangeSpec, fetcher: Fetcher) -> ExchangeAdapter:
    return feed_client.FeedAdapter(spec, fetcher)


KINDS: dict[str, Kind] = {
    feed_client.KIND: Kind(
        feed_client.KIND,
        "another tipline service's signed hash feed (Ed25519)",
        feed_client.check_config,
        _feed_adapter,
        ("Authorization", "Bearer {secret}"),
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
    fetcher = fetcher or Fetcher(spec.name)
    if kind.auth_header is not None:
        secret = read_credential(spec)
        header, template = kind.auth_header
        fetcher.headers = {**fetcher.headers, header: template.format(secret=secret)}
    return kind.build(spec, fetcher)
