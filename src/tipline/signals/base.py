"""Signal values, the signal-type interface and the registry shared with plugins.

A *signal* is one fingerprint of one piece of media (a PDQ hash, an MD5 digest, a list
of per-frame PDQ hashes for a video). A *signal type* knows how to parse, compare and
brute-force match its values (:class:`SignalType`), how to compute them from a photo or
a video (:class:`PhotoHasher`, :class:`VideoHasher`), and which fast index finds its
matches (:class:`IndexKind`); the indexes live in :mod:`tipline.index` and are tested
against the brute-force ``match`` here.

Built-in signal types are registered through the ``tipline.signals`` entry-point group,
the same way a plugin registers its own: a plugin type that hashes photos and declares
``index = IndexKind.HAMMING`` is computed by ``tipline hash``/``scan`` and matched
through a Hamming radius index without any change to tipline.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from tipline.errors import HashFormatError

if TYPE_CHECKING:
    from tipline.signals.media import Photo, Video


class MediaKind(enum.Enum):
    """What kind of media a signal type hashes."""

    PHOTO = "photo"
    VIDEO = "video"
    ANY = "any"


class IndexKind(enum.Enum):
    """Which fast index the Matcher keeps for a signal type's bank values.

    * ``EXACT``: equal values only (distance 0); values are ``n_bytes`` bytes (at most
      32) written as hex - digests.
    * ``HAMMING``: every value within the threshold in bits; values are ``n_bytes``
      bytes (at most 32, i.e. 256 bits) written as hex, searched by the multi-index
      Hamming radius index PDQ uses (shorter values are zero-padded, which keeps every
      Hamming distance).
    * ``VIDEO``: per-frame PDQ hashes with vPDQ's query/compared match percentages; the
      type provides ``frames(value) -> list[VideoFrame]``.
    * ``BRUTE_FORCE``: no index; the type's own :meth:`SignalType.match` over every value.
    """

    EXACT = "exact"
    HAMMING = "hamming"
    VIDEO = "video"
    BRUTE_FORCE = "brute_force"


#: Largest value, in bytes, the EXACT and HAMMING indexes hold.
MAX_INDEXED_BYTES = 32


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One hashed video frame: PDQ hash (32 bytes), quality 0-100, time in seconds."""

    index: int
    quality: int
    hash: bytes
    seconds: float


@dataclass(frozen=True, slots=True)
class Signal:
    """One fingerprint of one piece of media.

    ``value`` is the canonical wire form (lowercase hex for hashes and digests).
    ``quality`` is 0-100 for perceptual hashes, ``None`` for digests.
    ``low_quality`` flags perceptual hashes under the type's quality floor: they are
    returned, never blanked, so the caller decides.
    ``variant`` names a dihedral variant (``rot90``, ``flipx``...) when one was asked for.
    ``frames`` holds the per-frame hashes of a video signal (empty otherwise).
    """

    type: str
    value: str
    quality: int | None = None
    low_quality: bool = False
    variant: str | None = None
    frames: tuple[VideoFrame, ...] = field(default=(), repr=False)


@runtime_checkable
class SignalType(Protocol):
    """What every signal type (built-in or plugin) provides."""

    name: ClassVar[str]
    media: ClassVar[MediaKind]
    #: default match threshold in the type's distance unit (bits for PDQ; 0 for digests)
    default_threshold: ClassVar[int]
    #: the fast index the Matcher keeps for this type (EXACT and HAMMING also need an
    #: ``n_bytes`` class attribute: the value's size in bytes)
    index: ClassVar[IndexKind]

    def parse(self, text: str) -> str:
        """Validate ``text`` and return the canonical value; raise HashFormatError."""
        ...

    def distance(self, a: str, b: str) -> int:
        """Integer distance between two canonical values (0 = identical)."""
        ...

    def match(self, query: str, candidates: Sequence[str], threshold: int) -> list[tuple[int, int]]:
        """Brute-force oracle: ``(candidate_index, distance)`` for all within threshold."""
        ...


@runtime_checkable
class PhotoHasher(Protocol):
    """A signal type that computes its signals from a photo."""

    def hash_photo(self, photo: Photo) -> Sequence[Signal]:
        """This type's signals of ``photo`` (raise MediaError subclasses for bad input)."""
        ...


@runtime_checkable
class VideoHasher(Protocol):
    """A signal type that computes its signals from a video."""

    def hash_video(self, video: Video) -> Sequence[Signal]:
        """This type's signals of ``video`` (raise MediaError subclasses for bad input)."""
        ...


def index_kind(signal_type: SignalType) -> IndexKind:
    """The index a type asked for, or BRUTE_FORCE when it cannot have it (an EXACT or
    HAMMING type without a usable ``n_bytes``, a VIDEO type without ``frames``)."""
    kind = getattr(signal_type, "index", IndexKind.BRUTE_FORCE)
    if not isinstance(kind, IndexKind):
        return IndexKind.BRUTE_FORCE
    if kind in (IndexKind.EXACT, IndexKind.HAMMING):
        width = getattr(signal_type, "n_bytes", None)
        if not isinstance(width, int) or not 0 < width <= MAX_INDEXED_BYTES:
            return IndexKind.BRUTE_FORCE
    if kind is IndexKind.VIDEO and not callable(getattr(signal_type, "frames", None)):
        return IndexKind.BRUTE_FORCE
    return kind


_REGISTRY: dict[str, SignalType] | None = None
#: bumped on every change of the registry, so callers can cache what they derive from it
_GENERATION = 0


def _load_registry() -> dict[str, SignalType]:
    registry: dict[str, SignalType] = {}
    for ep in entry_points(group="tipline.signals"):
        cls = ep.load()
        instance = cls()
        registry[instance.name] = instance
    return registry


def signal_types() -> dict[str, SignalType]:
    """All registered signal types by name (loaded on first call, not at import)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _load_registry()
    return _REGISTRY


def registry_generation() -> int:
    """A number that changes whenever a signal type is registered or removed."""
    signal_types()
    return _GENERATION


def register_signal_type(signal_type: SignalType) -> None:
    """Register a signal type at run time (tests and embedding applications)."""
    global _GENERATION
    signal_types()[signal_type.name] = signal_type
    _GENERATION += 1


def unregister_signal_type(name: str) -> None:
    """Remove a signal type registered at run time (no error when absent)."""
    global _GENERATION
    signal_types().pop(name, None)
    _GENERATION += 1


def get_signal_type(name: str) -> SignalType:
    """The signal type called ``name``; HashFormatError naming the known ones otherwise."""
    types = signal_types()
    try:
        return types[name]
    except KeyError:
        known = ", ".join(sorted(types))
        raise HashFormatError(f"unknown signal type {name!r} (known: {known})") from None


def parse_typed_hash(text: str) -> tuple[str, str]:
    """Parse ``type:value`` (e.g. ``pdq:<64 hex>``) into ``(type, canonical value)``."""
    kind, sep, value = text.strip().partition(":")
    if not sep:
        raise HashFormatError(f"expected TYPE:VALUE, got {text!r}")
    signal_type = get_signal_type(kind.strip().lower())
    return signal_type.name, signal_type.parse(value)


def names(types: Iterable[SignalType]) -> list[str]:
    """Names of the given signal types, in order."""
    return [t.name for t in types]
