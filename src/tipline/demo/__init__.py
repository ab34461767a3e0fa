"""Benign sample pictures (generated gradients, shapes and text) and the demo seeder.

``tipline serve --demo`` puts these pictures' hashes into a bank called ``demo`` and
creates an API key, so a newcomer can upload one of them and see a match at once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tipline.config import Settings

if TYPE_CHECKING:
    from tipline.services.database import Database

DEMO_BANK = "demo"
#: the web UI user the demo makes (a reviewer bound to no tenant)
DEMO_REVIEWER = "reviewer"
_SUFFIXES = (".jpg", ".png")


def sample_images() -> list[Path]:
    """Paths of the bundled sample pictures, sorted by name."""
    folder = Path(str(resources.files("tipline.demo")))
    return sorted(p for p in folder.iterdir() if p.suffix in _SUFFIXES)


def seed_demo(settings: Settings, db: Database, base_url: str = "http://127.0.0.1:8000") -> str:
    """Create the ``demo`` bank (once) and a demo API key, replacing the previous start's
    key (its secret was shown once and cannot be shown again); return instructions."""
    from tipline.errors import NotFoundError
    from tipline.services import actions, banks
    from tipline.services.auth import Role, replace_key
    from tipline.services.database import in_transaction
    from tipline.signals.decode import DecodeMode
    from tipline.signals.hashing import HashOptions, hash_path
    from tipline.signals.limits import MediaLimits

    try:
        banks.show_bank(db, DEMO_BANK)
    except NotFoundError:
        banks.create_bank(db, DEMO_BANK, description="Benign sample pictures for the demo")
        # Reference decode, as for every hash stored in a bank (services.bank_media).
        options = HashOptions(signals=("pdq", "md5"), decode=DecodeMode.EXACT)
        for path in sample_images():
            result = hash_path(str(path), options, limits=MediaLimits.of(settings))
            if result.ok:
                banks.add_entry(
                    db,
                    DEMO_BANK,
                    [f"{s.type}:{s.value}" for s in result.signals],
                    entry_id=path.stem,
                    source="tipline demo",
                )
        # matches of the demo bank go to the review queue of the web UI
        in_transaction(
            db.sessions, actions.add_rule, action=actions.ActionKind.ENQUEUE_REVIEW, bank=DEMO_BANK
        )
    key = in_transaction(db.sessions, replace_key, name="demo", role=Role.ADMIN)
    password = _demo_reviewer(db)
    example = sample_images()[0]
    return (
        f"demo: bank {DEMO_BANK!r} holds {len(sample_images())} sample pictures.\n"
        f"demo: admin API key (shown once): {key.secret}\n"
        "demo: try\n"
        f"  curl -s -H 'Authorization: Bearer {key.secret}' "
        f"--data-binary @{example} {base_url}/v1/match\n"
        f"demo: then review it at {base_url}/web as {DEMO_REVIEWER!r}, "
        f"password (shown once): {password}"
    )


def _demo_reviewer(db: Database) -> str:
    """Give the demo's web reviewer a new random password (made on first start)."""
    import secrets

    from tipline.errors import NotFoundError
    from tipline.services import web_auth

    password = secrets.token_urlsafe(12)
    try:
        web_auth.set_password(db.sessions, DEMO_REVIEWER, password)
    except NotFoundError:
        web_auth.add_user(db.sessions, DEMO_REVIEWER, password, role="reviewer")
    return password
