"""Master keys and data keys (envelope encryption).

Each vault item is encrypted with its own random 256-bit data key. The data key is
stored in the item's database row *wrapped* (AES-256-GCM) by a master key, with the
item id as associated data, so a wrapped key copied onto another row does not open.
Rotating the master key rewraps the data keys (a database update per item) and never
touches the encrypted files. Purging an item deletes its wrapped key too, so a backup
copy of the file can no longer be decrypted (crypto-shredding).

The master key is 32 random bytes, given base64-encoded through the environment
(``TIPLINE_VAULT_MASTER_KEY``) or a file readable by its owner only
(``TIPLINE_VAULT_MASTER_KEY_FILE``). It is never stored in the database, logs or
audit records; rows and audit records name it by its *key id*, a 16-hex-digit
fingerprint (a domain-separated SHA-256 of the key) that reveals nothing about it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from tipline.config import Settings
from tipline.errors import EvidenceIntegrityError, VaultKeyError

KEY_BYTES = 32
_NONCE_BYTES = 12
#: wrapped data key: nonce | ciphertext | tag
WRAPPED_BYTES = _NONCE_BYTES + KEY_BYTES + 16
_WRAP_AAD = b"tipline-vault-data-key-v1\0"
_ID_DOMAIN = b"tipline-vault-master-key-id-v1\0"


def _decode_key(text: str, where: str) -> bytes:
    cleaned = "".join(text.split())
    raw: bytes | None = None
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(cleaned, altchars=altchars, validate=True)
            break
        except (binascii.Error, ValueError):
            continue
    if raw is None:
        raise VaultKeyError(f"{where}: not valid base64 (a master key is 32 bytes in base64)")
    if len(raw) != KEY_BYTES:
        raise VaultKeyError(
            f"{where}: a master key is base64 of {KEY_BYTES} bytes, got {len(raw)} bytes"
        )
    return raw


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A 256-bit master key; ``repr`` shows only its key id."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise VaultKeyError(f"a master key is {KEY_BYTES} bytes")

    @property
    def key_id(self) -> str:
        """16 hex digits naming this key in rows and audit records."""
        return hashlib.sha256(_ID_DOMAIN + self.secret).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    @classmethod
    def from_base64(cls, text: str, *, where: str = "master key") -> MasterKey:
        """Parse base64 (standard or URL-safe alphabet) of 32 bytes."""
        return cls(_decode_key(text, where))

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read a base64 key file; refuse one that others may read (like ssh does)."""
        try:
            info = path.stat()
            if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise VaultKeyError(
                    f"{path}: key file is accessible by group or others (chmod 600 it)"
                )
            if info.st_size > 4096:
                raise VaultKeyError(f"{path}: not a key file (over 4 KiB)")
            text = path.read_text("ascii")
        except UnicodeDecodeError:
            raise VaultKeyError(f"{path}: not valid base64 (a master key is 32 bytes)") from None
        except OSError as exc:
            raise VaultKeyError(f"{path}: cannot read key file: {exc.strerror}") from None
        return cls.from_base64(text, where=str(path))

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random key."""
        return cls(os.urandom(KEY_BYTES))

    def to_base64(self) -> str:
        """The key as base64 text (for writing a new key file; never log it)."""
        return base64.b64encode(self.secret).decode("ascii")


def write_key_file(path: Path, key: MasterKey) -> None:
    """Create ``path`` (mode 0600, must not exist) holding ``key`` in base64."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise VaultKeyError(f"{path}: already exists (refusing to overwrite a key)") from None
    except OSError as exc:
        raise VaultKeyError(f"{path}: cannot create key file: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key.to_base64() + "\n")


def _from_sources(value: SecretStr | None, path: Path | None, variable: str) -> MasterKey | None:
    if value is not None and path is not None:
        raise VaultKeyError(f"set {variable} or {variable}_FILE, not both")
    if value is not None:
        return MasterKey.from_base64(value.get_secret_value(), where=variable)
    if path is not None:
        return MasterKey.from_file(path)
    return None


def master_key_from_settings(settings: Settings) -> MasterKey | None:
    """The configured master key (None when neither variable is set)."""
    return _from_sources(
        settings.vault_master_key, settings.vault_master_key_file, "TIPLINE_VAULT_MASTER_KEY"
    )


def new_master_key_from_settings(settings: Settings) -> MasterKey | None:
    """The key to rotate to (``TIPLINE_VAULT_NEW_MASTER_KEY[_FILE]``), None when unset."""
    return _from_sources(
        settings.vault_new_master_key,
        settings.vault_new_master_key_file,
        "TIPLINE_VAULT_NEW_MASTER_KEY",
    )


def new_data_key() -> bytes:
    """A fresh random 256-bit data key for one item."""
    return os.urandom(KEY_BYTES)


@dataclass(frozen=True)
class Keyring:
    """The master key new items are wrapped with, plus keys that may still unwrap old
    items (during a rotation both the old and the new key are here)."""

    current: MasterKey
    others: tuple[MasterKey, ...] = ()

    def key_ids(self) -> list[str]:
        """Ids of every key held, current first."""
        return [self.current.key_id, *(k.key_id for k in self.others)]

    def get(self, key_id: str) -> MasterKey:
        """The key named ``key_id``; VaultKeyError naming both ids when not held."""
        for key in (self.current, *self.others):
            if key.key_id == key_id:
                return key
        held = ", ".join(self.key_ids())
        raise VaultKeyError(
            f"item is wrapped by master key {key_id}, but the configured key is {held}"
            " (wrong TIPLINE_VAULT_MASTER_KEY?)"
        )


def wrap(master: MasterKey, data_key: bytes, item_id: str) -> bytes:
    """``data_key`` encrypted under ``master``, bound to ``item_id``."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(master.secret).encrypt(
        nonce, data_key, _WRAP_AAD + item_id.encode("utf-8")
    )


def unwrap(master: MasterKey, wrapped: bytes, item_id: str) -> bytes:
    """The data key; EvidenceIntegrityError when the wrapped key was altered or moved."""
    if len(wrapped) != WRAPPED_BYTES:
        raise EvidenceIntegrityError(f"item {item_id}: wrapped data key has a wrong length")
    try:
        return AESGCM(master.secret).decrypt(
            wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _WRAP_AAD + item_id.encode("utf-8")
        )
    except InvalidTag:
        raise EvidenceIntegrityError(
            f"item {item_id}: wrapped data key fails authentication (altered or moved row)"
        ) from None
