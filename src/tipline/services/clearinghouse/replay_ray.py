"""The replay's searches on a Ray cluster: one actor per CPU, each searching a slice of
every epoch's contents (:class:`.replay_search.SearchState`) against the index the
driver writes once (:class:`.replay_search.IndexWriter`) into a directory every actor
memory-maps: one copy of the index per node, in its page cache, whatever the number of
actors. On a cluster of several nodes that directory must be on storage every node
reads (as ``tipline scan``'s index folder). Queries and results cross as
:func:`.replay_search.pack` blobs, the index as JSON manifests naming its files.

Ray is optional and loaded only through :func:`tipline._optional.require` (via
:func:`tipline.services.scan.ray_pool.connect`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tipline.index.pdq import PdqIndex
from tipline.services.clearinghouse.dedup import DedupSettings
from tipline.services.clearinghouse.replay import (
    I64,
    Signals,
    query_arrays,
    split_queries,
)
from tipline.services.clearinghouse.replay_search import (
    Arrays,
    IndexWriter,
    SearchState,
    pack,
    unpack,
)
from tipline.services.scan.ray_pool import connect


class SearchActor:
    """The body of one Ray actor (blobs in and out)."""

    def __init__(self, directory: str, pdq_distance: int, vpdq_distance: int) -> None:
        """Search the index written under ``directory`` with these distances."""
        self.state = SearchState(directory, pdq_distance, vpdq_distance)

    def warm_up(self) -> None:
        """Load the index kernels (compiled once per machine) before timing starts."""
        PdqIndex.from_words(np.zeros(1, np.int64), np.zeros((1, 4), np.uint64)).warm_up()

    def search(self, manifest: str, queries: bytes) -> bytes:
        """:meth:`SearchState.search` on a blob."""
        return pack(self.state.search(manifest, unpack(queries)))

    def pid(self) -> int:
        """The actor's process id (to read its CPU time from outside while it works)."""
        return os.getpid()

    def stats(self) -> str:
        """:meth:`SearchState.stats` as JSON."""
        return json.dumps(self.state.stats())


class RaySearch:
    """A :class:`.replay.Searcher` backed by actors."""

    def __init__(
        self,
        address: str,
        settings: DedupSettings,
        workers: int | None = None,
        directory: Path | None = None,
    ) -> None:
        """Connect to Ray at ``address`` and start ``workers`` actors (default: one per
        cluster CPU) searching an index written under ``directory`` (default: a new
        temporary directory, removed by :meth:`close`; give a shared one for a cluster
        of several nodes)."""
        self.ray = connect(address)
        self._owned = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="tipline-replay-")) if directory is None else directory
        )
        self.writer = IndexWriter(self.directory)
        count = workers or max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        actor = self.ray.remote(num_cpus=1)(SearchActor)
        self.actors: list[Any] = [
            actor.remote(str(self.directory), settings.pdq_distance, settings.vpdq_distance)
            for _ in range(count)
        ]
        self.ray.get([a.warm_up.remote() for a in self.actors])

    def submit(self, targets: Arrays, contents: I64, signals: Signals) -> list[Any]:
        """Add the epoch's first copies to the index, then start every actor on its
        slice of ``contents`` (actors run their calls in order, so the next epoch may be
        submitted before this one is collected)."""
        manifest = self.writer.add(targets)
        parts = split_queries(signals, contents, len(self.actors))
        return [
            a.search.remote(manifest, pack(query_arrays(signals, part)))
            for a, part in zip(self.actors, parts, strict=True)
        ]

    def collect(self, handle: list[Any]) -> Arrays:
        """The matches of a submitted epoch, concatenated."""
        results = [unpack(blob) for blob in self.ray.get(handle)]
        self.writer.prune()
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}

    def pids(self) -> list[int]:
        """The actors' process ids."""
        return [int(p) for p in self.ray.get([a.pid.remote() for a in self.actors])]

    def stats(self) -> list[dict[str, float]]:
        """Per actor: search CPU seconds, lookups and memory (MiB, see
        :meth:`SearchState.stats`)."""
        return [json.loads(s) for s in self.ray.get([a.stats.remote() for a in self.actors])]

    def close(self) -> None:
        """Stop the actors."""
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)
