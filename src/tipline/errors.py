"""One exception hierarchy for the whole package.

The CLI turns a :class:`TiplineError` into one line and a non-zero exit; the HTTP API
turns it into an RFC 9457 problem document using :attr:`TiplineError.status`.
"""

from __future__ import annotations


class TiplineError(Exception):
    """Root of every error tipline raises on purpose."""

    #: HTTP status the API answers with for this error.
    status: int = 500
    #: Short machine-readable slug used as the problem type.
    code: str = "error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        if self.path is not None:
            return f"{self.path}: {self.message}"
        return self.message


class InputError(TiplineError):
    """The caller gave something unusable (bad argument, bad file, bad hash)."""

    status = 400
    code = "bad-input"


class MediaError(InputError):
    """A media file cannot be read or decoded."""

    status = 422
    code = "bad-media"


class UnsupportedMediaError(MediaError):
    """The bytes are not a format tipline can hash."""

    status = 415
    code = "unsupported-media"


class DecompressionBombError(MediaError):
    """An image or video claims more pixels than the configured limit."""

    code = "decompression-bomb"


class MediaTooLargeError(MediaError):
    """The file is larger than the configured byte limit."""

    status = 413
    code = "too-large"


class BusyError(TiplineError):
    """The worker is at capacity (e.g. its decoded-pixel budget); retry after
    ``retry_after`` seconds."""

    status = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class HashFormatError(InputError):
    """A hash string is malformed (bad hex, wrong length, unknown signal type)."""

    code = "bad-hash"


class ImportFormatError(InputError):
    """A hash-list file cannot be parsed at a given line."""

    code = "bad-import"

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message, path=path)
        self.line = line

    def __str__(self) -> str:
        where = self.path or "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


class NotFoundError(TiplineError):
    """A named object (bank, entry, scan, key) does not exist."""

    status = 404
    code = "not-found"


class ConflictError(TiplineError):
    """The object already exists or the change conflicts with current state."""

    status = 409
    code = "conflict"


class AuthError(TiplineError):
    """Missing or invalid credentials."""

    status = 401
    code = "unauthorized"


class PermissionDeniedError(TiplineError):
    """Valid credentials without the needed role or tenant."""

    status = 403
    code = "forbidden"


class FetchError(InputError):
    """A URL could not be fetched (refused by SSRF guard, too big, too slow, bad status)."""

    code = "fetch-failed"


class IndexCorruptError(TiplineError):
    """An index file fails its version, size or checksum check."""

    code = "index-corrupt"


class ConfigError(TiplineError):
    """The configuration is invalid."""

    code = "config"


class DatabaseUnavailableError(TiplineError):
    """The database cannot be reached or opened (server down, no such database,
    unwritable file)."""

    status = 503
    code = "unavailable"


class MissingExtraError(TiplineError):
    """An optional dependency is not installed; the message names the extra."""

    code = "missing-extra"


class AuditChainError(TiplineError):
    """The audit log hash chain is broken (an edited or deleted record)."""

    code = "audit-broken"


class GeoDatabaseError(ConfigError):
    """The IP geolocation database routing needs is not configured or not usable (the API
    answers 503: the service's configuration, not the request, must change)."""

    status = 503
    code = "geoip-database"


class VaultKeyError(ConfigError):
    """The evidence vault's master key is missing, malformed or not the one an item needs
    (the API answers 503: the service's configuration, not the request, must change)."""

    status = 503
    code = "vault-key"


class EvidenceIntegrityError(TiplineError):
    """A vault item fails its integrity check (tampered, truncated, swapped or wrong key)."""

    code = "evidence-corrupt"


class ExchangeError(TiplineError):
    """A hash exchange could not be synced (source unreachable, bad answer, bad config)."""

    status = 502
    code = "exchange-failed"


class FeedRefusedError(ExchangeError):
    """A signed feed page failed verification (tampered, wrong key, replayed or out of
    order); nothing of it was applied."""

    code = "feed-refused"


class SourceUnavailableError(ExchangeError):
    """An exchange's source kept failing (timeouts, 5xx, 429) through every retry."""

    code = "source-unavailable"
