"""Imported by the hashing worker pools' forkserver preload: loads the compiled PDQ
kernels once in the forkserver, so every worker forked from it starts with them instead
of paying the load on its first image."""

from __future__ import annotations

from tipline.signals import pdq_fast

pdq_fast.warm_up()
