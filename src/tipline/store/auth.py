"""API keys: a public key id for lookup, the SHA-256 of the secret part, a role, a tenant."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime


class ApiKey(Base):
    """One API key; the secret itself is never stored, only its SHA-256 (hex)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r}, role={self.role!r}, tenant={self.tenant!r})"
