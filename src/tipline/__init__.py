"""tipline: open pipeline for matching known material, review and CyberTipline reporting."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tipline")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
