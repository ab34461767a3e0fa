"""Media signals: hashing photos and videos many ways in one read."""

from tipline.signals.base import (
    MediaKind,
    Signal,
    SignalType,
    VideoFrame,
    get_signal_type,
    signal_types,
)

__all__ = [
    "MediaKind",
    "Signal",
    "SignalType",
    "VideoFrame",
    "get_signal_type",
    "signal_types",
]
