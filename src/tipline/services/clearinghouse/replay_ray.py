"""The replay's searches on a Ray cluster: one actor per CPU, each holding the whole
index (:class:`.replay_search.SearchState`) and searching a slice of every epoch's
contents. Epoch data and results cross as :func:`.replay_search.pack` blobs; the
epoch's targets are put in the object store once and read by every actor.

Ray is optional and loaded only through :func:`tipline._optional.require` (via
:func:`tipline.services.scan.ray_pool.connect`).
"""

from __future__ import annotations

import json
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
from tipline.services.clearinghouse.replay_search import Arrays, SearchState, pack, unpack
from tipline.services.scan.ray_pool import connect


class SearchActor:
    """The body of one Ray actor (blobs in and out)."""

    def __init__(self, pdq_distance: int, vpdq_distance: int) -> None:
        """An empty index with these distances."""
        self.state = SearchState(pdq_distance, vpdq_distance)

    def warm_up(self) -> None:
        """Load the index kernels (compiled once per machine) before timing starts."""
        PdqIndex.from_words(np.zeros(1, np.int64), np.zeros((1, 4), np.uint64)).warm_up()

    def search(self, targets: bytes, queries: bytes) -> bytes:
        """:meth:`SearchState.search` on blobs."""
        return pack(self.state.search(unpack(targets), unpack(queries)))

    def stats(self) -> str:
        """:meth:`SearchState.stats` as JSON."""
        return json.dumps(self.state.stats())


class RaySearch:
    """A :class:`.replay.Searcher` backed by actors."""

    def __init__(self, address: str, settings: DedupSettings, workers: int | None = None) -> None:
        """Connect to Ray at ``address`` and start ``workers`` actors (default: one per
        cluster CPU)."""
        self.ray = connect(address)
        count = workers or max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        actor = self.ray.remote(num_cpus=1)(SearchActor)
        self.actors: list[Any] = [
            actor.remote(settings.pdq_distance, settings.vpdq_distance) for _ in range(count)
        ]
        self.ray.get([a.warm_up.remote() for a in self.actors])

    def submit(self, targets: Arrays, contents: I64, signals: Signals) -> list[Any]:
        """Start every actor on its slice of ``contents`` (actors run their calls in
        order, so the next epoch may be submitted before this one is collected)."""
        ref = self.ray.put(pack(targets))
        parts = split_queries(signals, contents, len(self.actors))
        return [
            a.search.remote(ref, pack(query_arrays(signals, part)))
            for a, part in zip(self.actors, parts, strict=True)
        ]

    def collect(self, handle: list[Any]) -> Arrays:
        """The matches of a submitted epoch, concatenated."""
        results = [unpack(blob) for blob in self.ray.get(handle)]
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}

    def stats(self) -> list[dict[str, float]]:
        """Per actor: search CPU seconds and peak resident memory (MiB)."""
        return [json.loads(s) for s in self.ray.get([a.stats.remote() for a in self.actors])]

    def close(self) -> None:
        """Stop the actors."""
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
