"""People of the web UI: password users (:mod:`.users`) and their server-side sessions
with CSRF tokens and signed URLs (:mod:`.sessions`)."""

from __future__ import annotations

from tipline.services.web_auth.sessions import (
    SessionExpiredError,
    SessionPolicy,
    WebSession,
    login,
    logout,
    refuse,
    resume,
)
from tipline.services.web_auth.users import (
    MAX_LEVEL,
    UserInfo,
    add_user,
    disable_user,
    list_users,
    set_password,
    set_preferences,
)

__all__ = [
    "MAX_LEVEL",
    "SessionExpiredError",
    "SessionPolicy",
    "UserInfo",
    "WebSession",
    "add_user",
    "disable_user",
    "list_users",
    "login",
    "logout",
    "refuse",
    "resume",
    "set_password",
    "set_preferences",
]
