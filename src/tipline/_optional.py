"""Load heavy optional dependencies, naming the extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from tipline.errors import MissingExtraError

#: module name -> extra that provides it
_EXTRAS: dict[str, str] = {
    "vpdq": "video",
    "ray": "ray",
    "psycopg": "postgres",
    "fastapi": "service",
    "uvicorn": "service",
    "httpx": "service",
    "prometheus_client": "service",
    "lxml": "reports",
    "maxminddb": "clearinghouse",
    "fpdf": "clearinghouse",
    "mmdb_writer": "clearinghouse",
    "netaddr": "clearinghouse",
    "pillow_heif": "heif",
    "pillow_avif": "heif",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module.split(".")[0], "dev")
        raise MissingExtraError(
            f"{module} is not installed; install it with: pip install 'tipline[{extra}]'"
        ) from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
