"""Imported by the hashing worker pools' forkserver preload: loads the compiled PDQ
kernels and the signal-type registry once in the forkserver, so every worker forked
from it starts with them instead of paying the load on its first image, and sets the
C allocator to keep freed memory for reuse (inherited by every worker forked)."""

from __future__ import annotations

import ctypes

from tipline.signals import pdq_fast
from tipline.signals.base import signal_types

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks under this come from the heap and are reused; larger ones (a decoded
#: 50-megapixel image) are mapped and returned to the system when freed.
MMAP_THRESHOLD = 16 << 20
#: Free memory kept at the top of a worker's heap instead of being given back.
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Fix glibc's heap thresholds at about the values its own dynamic heuristic
    drifts towards; True when applied (False on other C libraries).

    Every photo allocates a few buffers of 0.1-2 MB (the file's bytes, the pixels,
    the kernel's scratch) and frees them. With glibc's defaults a hashing worker keeps
    giving that memory back and faulting it in again, 40-180 page faults per image at
    several microseconds each on virtual machines. Fixed thresholds keep it: the cost
    is at most TRIM_THRESHOLD of freed memory held per worker.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


keep_freed_memory()
pdq_fast.warm_up()
# every hashing call looks signal types up in the registry (entry points)
signal_types()
