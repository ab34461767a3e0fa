"""Region descriptors of media added to a bank.

Computed from the reference decode (as the entry's own PDQ, see
:mod:`tipline.services.bank_media`); photos only (a video has none). The bytes have
already been hashed under the media limits by the caller, so a decode error here is a
bug, never hostile input slipping through: it is raised.
"""

from __future__ import annotations

from tipline.signals.decode import DecodeMode, decode_pixels
from tipline.signals.limits import MediaLimits
from tipline.signals.regions import DEFAULT_GRID, RegionGrid, region_hashes
from tipline.signals.sniff import SniffedKind, sniff


def media_regions(
    data: bytes, limits: MediaLimits | None = None, grid: RegionGrid = DEFAULT_GRID
) -> list[tuple[str, str]]:
    """``(region name, PDQ hex)`` of a photo's crops and small rotations; ``[]`` for a
    video or a picture too small or too flat to give any."""
    sniffed = sniff(data[:512])
    if sniffed.kind is not SniffedKind.PHOTO:
        return []
    max_pixels = (limits or MediaLimits()).max_image_pixels
    pixels = decode_pixels(data, mode=DecodeMode.EXACT, max_pixels=max_pixels, fmt=sniffed.format)
    return region_hashes(pixels, grid)
