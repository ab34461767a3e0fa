"""Imported by the hashing worker pools' forkserver preload: loads the compiled PDQ
kernels and the signal-type registry once in the forkserver, so every worker forked
from it starts with them instead of paying the load on its first image."""

from __future__ import annotations

from tipline.signals import pdq_fast
from tipline.signals.base import signal_types

pdq_fast.warm_up()
# every hashing call looks signal types up in the registry (entry points)
signal_types()
