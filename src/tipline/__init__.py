"""tipline: hash media and match it against banks of known-material hashes.

A command line and an HTTP API (native and HMA-compatible) over one set of services:
signals (PDQ, vPDQ, MD5, SHA-256), banks, matching, batch scans, a review queue and
webhooks for matches, CyberTipline reports built from reviewed decisions and delivered
to an ISPWS endpoint, an encrypted evidence vault and a hash-chained audit log.
docs/layout.md says where each of these lives.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tipline")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
