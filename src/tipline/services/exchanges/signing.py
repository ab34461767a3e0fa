"""Ed25519 signatures over canonical JSON, for tipline's own hash feed.

A signed document is ``{"page": {...}, "key_id": "...", "signature": "<base64>"}``. The
signature covers the canonical bytes of ``page`` (keys sorted, no spaces, UTF-8), so the
receiver re-encodes the page it parsed and checks the signature against the public key
it was configured with: any change to any field, a signature by another key, or a
different key id is refused.

Keys travel as base64 of their 32 raw bytes. The private key comes from the
environment or a file (``TIPLINE_FEED_SIGNING_KEY`` / ``TIPLINE_FEED_SIGNING_KEY_FILE``),
never from the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from tipline.errors import ConfigError, FeedRefusedError


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public: bytes) -> str:
    """Short fingerprint of a raw public key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(public).hexdigest()[:16]


def _b64_32(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise ConfigError(f"{what} must be base64 of 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A publisher's private key."""

    key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_base64(cls, text: str) -> SigningKey:
        """Read base64 of the 32-byte private seed (ConfigError when malformed)."""
        return cls(Ed25519PrivateKey.from_private_bytes(_b64_32(text, "the feed signing key")))

    def private_base64(self) -> str:
        """Base64 of the 32-byte private seed (to write to a key file, mode 0600)."""
        raw = self.key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(raw).decode()

    def public(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(self.key.public_key())

    def sign(self, page: Mapping[str, Any]) -> dict[str, Any]:
        """The signed document of ``page``."""
        signature = self.key.sign(canonical_bytes(page))
        return {
            "page": dict(page),
            "key_id": self.public().key_id,
            "signature": base64.b64encode(signature).decode(),
        }


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A subscriber's copy of the publisher's public key."""

    key: Ed25519PublicKey

    @classmethod
    def from_base64(cls, text: str) -> VerifyKey:
        """Read base64 of the 32-byte public key (ConfigError when malformed)."""
        return cls(Ed25519PublicKey.from_public_bytes(_b64_32(text, "the feed public key")))

    @property
    def key_id(self) -> str:
        """Fingerprint of this key."""
        return key_id_of(_raw_public(self.key))

    def base64(self) -> str:
        """Base64 of the 32 raw bytes (what a subscriber is configured with)."""
        return base64.b64encode(_raw_public(self.key)).decode()

    def verify(self, document: Any) -> dict[str, Any]:
        """The page of a signed document; FeedRefusedError unless its signature is by
        this key over exactly these contents."""
        if not isinstance(document, dict) or not isinstance(document.get("page"), dict):
            raise FeedRefusedError("feed page refused: not a signed page document")
        key_id, signature = document.get("key_id"), document.get("signature")
        if not isinstance(key_id, str) or not isinstance(signature, str):
            raise FeedRefusedError("feed page refused: no key id or signature")
        if key_id != self.key_id:
            raise FeedRefusedError(
                f"feed page refused: signed by key {key_id[:16]!r}, expected {self.key_id!r}"
            )
        try:
            raw = base64.b64decode(signature, validate=True)
            self.key.verify(raw, canonical_bytes(document["page"]))
        except (binascii.Error, ValueError, InvalidSignature):
            raise FeedRefusedError("feed page refused: bad signature (tampered page)") from None
        page: dict[str, Any] = document["page"]
        return page
