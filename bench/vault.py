"""Evidence vault throughput: encrypt (store) and decrypt (read with every check) of a
1 MB and a 100 MB item, file on disk, against anchors run in the same process: one-shot
AES-256-GCM of the whole buffer in memory (the `cryptography` call the format wraps;
needs the item twice in RAM) and plain SHA-256 (which the format computes twice per
pass: content and file digests).

Usage: ``python bench/vault.py [--sizes-mb 1 100] [--repeat 3] [--chunk-kib 1024]``

Prints MB/s (10**6 bytes per second, best of ``--repeat``) and each figure's ratio to
the one-shot anchor.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tipline.services.vault import _format
from tipline.services.vault.items import _HashingReader

ITEM_ID = "01JDXBENCH0000000000000000"


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(size_mb: int, repeat: int, chunk: int, folder: Path) -> dict[str, float]:
    """Seconds (best of ``repeat``) of each operation on a ``size_mb`` MB item."""
    data = os.urandom(size_mb * 10**6)
    key = os.urandom(32)
    source = folder / "plain.bin"
    source.write_bytes(data)
    sealed = folder / "item.tpv"

    def encrypt() -> None:
        # what the service's store does: chunked encryption, both digests, fsync
        with source.open("rb") as src, sealed.open("wb") as dst:
            _format.encrypt(key, ITEM_ID, src, dst, chunk_size=chunk)
            dst.flush()
            os.fsync(dst.fileno())

    def decrypt() -> None:
        # what the service's read does: authenticate every chunk, hash the content and
        # the file as they stream by
        content = hashlib.sha256()
        with sealed.open("rb") as src:
            reader = _HashingReader(src)
            for part in _format.decrypt_chunks(key, ITEM_ID, reader):  # type: ignore[arg-type]
                content.update(part)
        content.hexdigest()
        reader.sha256.hexdigest()

    def one_shot() -> None:
        AESGCM(key).encrypt(b"\0" * 12, data, None)

    def sha256() -> None:
        hashlib.sha256(data).hexdigest()

    return {
        "encrypt (chunked, to disk)": _best(encrypt, repeat),
        "decrypt + verify (from disk)": _best(decrypt, repeat),
        "anchor: one-shot AES-GCM in memory": _best(one_shot, repeat),
        "anchor: SHA-256 in memory": _best(sha256, repeat),
    }


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    args = parser.parse_args()
    print(f"{'size':>7}  {'operation':<36} {'MB/s':>8} {'vs one-shot':>12}")
    for size in args.sizes_mb:
        with tempfile.TemporaryDirectory(prefix="tipline-bench-vault-") as tmp:
            times = run(size, args.repeat, args.chunk_kib * 1024, Path(tmp))
        anchor = times["anchor: one-shot AES-GCM in memory"]
        for name, seconds in times.items():
            rate = size / seconds
            print(f"{size:>5}MB  {name:<36} {rate:>8.0f} {anchor / seconds:>11.2f}x")


if __name__ == "__main__":
    main()
