"""An exchange's credential, read from where its configuration points: an environment
variable or a file. The value is never stored, logged or put in an error message."""

from __future__ import annotations

import os
from pathlib import Path

from tipline.errors import ConfigError
from tipline.services.exchanges.model import ExchangeSpec

#: credential files larger than this are refused (a token is a few hundred bytes)
MAX_CREDENTIAL_BYTES = 64 * 1024


def read_credential(spec: ExchangeSpec, *, required: bool = True) -> str | None:
    """The secret of ``spec`` (stripped), or None when none is configured and not
    ``required``. ConfigError names the variable or file, never the value."""
    if spec.credential_env:
        value = os.environ.get(spec.credential_env, "").strip()
        if not value:
            raise ConfigError(
                f"exchange {spec.name!r}: environment variable {spec.credential_env} is unset"
            )
        return value
    if spec.credential_file:
        path = Path(spec.credential_file)
        try:
            if path.stat().st_size > MAX_CREDENTIAL_BYTES:
                raise ConfigError(f"exchange {spec.name!r}: credential file {path} is too large")
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise ConfigError(
                f"exchange {spec.name!r}: cannot read credential file {path}: {reason}"
            ) from None
        if not value:
            raise ConfigError(f"exchange {spec.name!r}: credential file {path} is empty")
        return value
    if required:
        raise ConfigError(
            f"exchange {spec.name!r} needs a credential: --credential-env VAR or "
            "--credential-file PATH"
        )
    return None
