"""The match index files: built from the database, opened, checked, merged, replaced.

Index files live under ``Settings.resolved_index_dir()``::

    <index dir>/meta.json                what the files hold (database instance, last seq)
    <index dir>/<type>/                  a LiveIndex per HAMMING type (``pdq/``)
    <index dir>/exact-<type>-<tag>.tpi   an ExactIndex per EXACT type (md5, sha1, ...)
    <index dir>/video-<type>-<tag>.tpi   a VideoIndex per VIDEO type (vpdq)

The files are derived data: the database is the source of truth. Missing, truncated or
corrupted files (checksums), a ``meta.json`` that does not fit the database, or signal
types whose index kind changed since the build make :meth:`IndexDirectory.open_or_build`
rebuild everything from the database. Builds and merges hold an exclusive lock on
``<index dir>/.lock``, so processes sharing the folder never write it at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tipline.errors import HashFormatError, ImportFormatError, IndexCorruptError
from tipline.index import ExactIndex, LiveIndex, VideoIndex
from tipline.services.database import Database
from tipline.services.matching.signal_rows import (
    SignalRows,
    exact_width,
    kind_of,
    video_frames,
)
from tipline.signals.base import IndexKind, VideoFrame, index_kind, signal_types
from tipline.store import bank_repository as repo

log = logging.getLogger("tipline.matching")

#: Version of meta.json; a different one triggers a rebuild.
META_FORMAT = 1
#: Signals read from the database per query while building or catching up.
PAGE = 100_000


class IndexFiles:
    """The opened base files plus the position in the database they hold."""

    def __init__(
        self,
        hamming: dict[str, LiveIndex],
        exact: dict[str, ExactIndex],
        video: dict[str, VideoIndex],
        other: dict[str, list[tuple[int, str]]],
        seq: int,
        after_id: int,
    ) -> None:
        self.hamming = hamming
        self.exact = exact
        self.video = video
        #: base signals of types without an index, matched by brute force
        self.other = other
        self.seq = seq
        self.after_id = after_id


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory/.lock`` (serialises builds across processes)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _registered(kind: IndexKind) -> list[str]:
    return sorted(n for n, t in signal_types().items() if index_kind(t) is kind)


def _tag() -> str:
    return f"{time.time_ns():x}-{os.getpid()}"


class IndexDirectory:
    """The index files of one database in one folder."""

    def __init__(self, db: Database, directory: Path, instance: str) -> None:
        self.db = db
        self.dir = directory
        self.instance = instance
        #: True when the last :meth:`open_or_build` found the files unusable
        self.rebuilt = False

    @property
    def meta_path(self) -> Path:
        """``meta.json``."""
        return self.dir / "meta.json"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The folder's exclusive build lock."""
        return dir_lock(self.dir)

    # -- open ---------------------------------------------------------------------------

    def open_or_build(self) -> IndexFiles:
        """Open the files, or (re)build them from the database when they are missing or
        unusable (logging one line that says why)."""
        for _ in range(3):
            reason = self._try_open()
            if isinstance(reason, IndexFiles):
                return reason
            if not (isinstance(reason, str) and reason.startswith("FileNotFoundError")):
                break
            # another process may have replaced meta.json and removed the old files
            # between our reads: read meta.json again before declaring the index broken
            time.sleep(0.05)
        with self.lock():
            again = self._try_open()  # another process may have just rebuilt
            if isinstance(again, IndexFiles):
                return again
            if again is None:
                log.info("building the match index in %s from the database", self.dir)
            else:
                log.warning(
                    "match index in %s is unusable (%s); rebuilding it from the database",
                    self.dir,
                    again,
                )
                self.rebuilt = True
            return self.build()

    def _try_open(self) -> IndexFiles | str | None:
        """The opened files, or why they cannot be used (None: there is no index yet)."""
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
                return "meta.json has an unknown format"
            if meta.get("instance") != self.instance:
                return "it was built from another database"
            seq, after_id = int(meta["seq"]), int(meta["after_id"])
            with self.db.sessions() as s:
                if seq > repo.current_seq(s):
                    return "it is newer than the database"
            generations = meta.get("hamming") or {"pdq": meta["pdq_generation"]}
            videos = meta.get("videos") or ({"vpdq": meta["video"]} if meta.get("video") else {})
            other_types = [str(t) for t in meta.get("other_types") or []]
            changed = self._kind_changes(generations, meta["exact"], videos, other_types)
            if changed:
                return changed
            hamming: dict[str, LiveIndex] = {}
            for name, generation in dict(generations).items():
                live = LiveIndex.open(self.dir / str(name))
                if live.generation < int(generation):
                    return f"{name} generation is older than meta.json says"
                hamming[str(name)] = live
            exact: dict[str, ExactIndex] = {}
            for kind, file in dict(meta["exact"]).items():
                exact[str(kind)] = ExactIndex.open(self.dir / str(file))
                if exact[str(kind)].width != exact_width(signal_types()[str(kind)]):
                    return f"the {kind} index has another value width"
            video = {str(k): VideoIndex.open(self.dir / str(v)) for k, v in dict(videos).items()}
            other = self._load_other(seq, other_types)
        except IndexCorruptError as exc:
            return str(exc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return IndexFiles(hamming, exact, video, other, seq, after_id)

    @staticmethod
    def _kind_changes(
        hamming: dict[str, Any], exact: dict[str, Any], video: dict[str, Any], other: list[str]
    ) -> str | None:
        """Why the files no longer fit the registered signal types (None: they fit)."""
        expected = [
            (hamming, IndexKind.HAMMING),
            (exact, IndexKind.EXACT),
            (video, IndexKind.VIDEO),
            (dict.fromkeys(other), IndexKind.BRUTE_FORCE),
        ]
        for names, kind in expected:
            for name in names:
                if kind_of(str(name)) is not kind:
                    return f"signal type {name!r} is no longer indexed as {kind.value}"
        missing = set(_registered(IndexKind.HAMMING)) - set(hamming)
        missing |= set(_registered(IndexKind.VIDEO)) - set(video)
        if missing:
            return f"no index for signal types {sorted(missing)}"
        return None

    def _load_other(self, upto: int, types: list[str]) -> dict[str, list[tuple[int, str]]]:
        """Base signals of the index-less types meta.json lists (none, usually)."""
        out: dict[str, list[tuple[int, str]]] = {}
        if not types:
            return out
        with self.db.sessions() as s:
            for change in repo.signals_of_types(s, types, upto=upto):
                out.setdefault(change.type, []).append((change.entry_pk, change.value))
        return out

    # -- build --------------------------------------------------------------------------

    def _collect(self, upto: int) -> tuple[SignalRows, tuple[int, int]]:
        out = SignalRows()
        after = (0, 0)
        with self.db.sessions() as s:
            while True:
                page = repo.signals_page(s, after, limit=PAGE, upto=upto)
                for change, row_id in page:
                    out.add(change)
                    after = (change.seq, row_id)
                out.pack()
                if len(page) < PAGE:
                    return out, after

    def build(self) -> IndexFiles:
        """Write every index file from the database and point meta.json at them (call
        with :meth:`lock` held)."""
        with self.db.sessions() as s:
            upto = repo.current_seq(s)
        data, after = self._collect(upto)
        tag = _tag()
        hamming: dict[str, LiveIndex] = {}
        for name in sorted(set(data.hamming) | set(_registered(IndexKind.HAMMING))):
            rows = data.hamming.pop(name, None)
            if rows is None:
                ids, hashes = np.zeros(0, np.int64), np.zeros((0, 32), np.uint8)
            else:
                ids, hashes = rows.arrays()
            hamming[name] = LiveIndex.create(self.dir / name, ids, hashes)
            del rows, ids, hashes
        exact_files = self._write_exact(data.exact, {}, tag)
        video_files: dict[str, str] = {}
        for name in sorted(set(data.video) | set(_registered(IndexKind.VIDEO))):
            video_files[name] = f"video-{name}-{tag}.tpi"
            VideoIndex.build(data.video.get(name, [])).save(self.dir / video_files[name])
        self._write_meta(after, hamming, exact_files, video_files, sorted(data.other))
        if data.other:
            log.warning(
                "signal types without an index are matched by brute force: %s",
                ", ".join(sorted(data.other)),
            )
        return IndexFiles(
            hamming,
            {k: ExactIndex.open(self.dir / v) for k, v in exact_files.items()},
            {k: VideoIndex.open(self.dir / v) for k, v in video_files.items()},
            data.other,
            after[0],
            after[1],
        )

    # -- merge --------------------------------------------------------------------------

    def write_merged(
        self, files: IndexFiles, snapshot: SignalRows, after: tuple[int, int]
    ) -> IndexFiles:
        """New base files holding ``files`` plus ``snapshot`` (call with :meth:`lock`
        held). Rows of HAMMING types that already have a LiveIndex must have been added
        to it; ``snapshot.hamming`` holds the types that get their first one here."""
        tag = _tag()
        hamming = dict(files.hamming)
        for live in hamming.values():
            live.merge()  # folds every hash added so far
        for name, rows in snapshot.hamming.items():
            ids, hashes = rows.arrays()
            if name in hamming:
                hamming[name].add(ids, hashes)
                hamming[name].merge()
            else:
                hamming[name] = LiveIndex.create(self.dir / name, ids, hashes)
        exact_files = self._write_exact(snapshot.exact, files.exact, tag)
        video_files: dict[str, str] = {}
        for name in sorted(set(files.video) | set(snapshot.video)):
            video_files[name] = f"video-{name}-{tag}.tpi"
            base = self._video_items(name, files.video.get(name))
            videos = [*base, *snapshot.video.get(name, [])]
            VideoIndex.build(videos).save(self.dir / video_files[name])
        other = {k: list(v) for k, v in files.other.items()}
        for name, items in snapshot.other.items():
            other.setdefault(name, []).extend(items)
        self._write_meta(after, hamming, exact_files, video_files, sorted(other))
        return IndexFiles(
            hamming,
            {k: ExactIndex.open(self.dir / v) for k, v in exact_files.items()},
            {k: VideoIndex.open(self.dir / v) for k, v in video_files.items()},
            other,
            after[0],
            after[1],
        )

    def _video_items(
        self, name: str, video: VideoIndex | None
    ) -> list[tuple[int, list[VideoFrame]]]:
        """Base videos back as (id, frames) from the database (videos are few)."""
        if video is None or len(video) == 0:
            return []
        signal_type = signal_types()[name]
        ids = [int(v) for v in video.video_ids]
        out: list[tuple[int, list[VideoFrame]]] = []
        with self.db.sessions() as s:
            sigs = repo.signals_of(s, ids)
        for pk in ids:
            for sig in sigs.get(pk, []):
                if sig.type == name:
                    with contextlib.suppress(ImportFormatError, HashFormatError):
                        out.append((pk, video_frames(signal_type, sig.value)))
        return out

    # -- files --------------------------------------------------------------------------

    def _write_exact(
        self,
        delta: dict[str, dict[bytes, list[int]]],
        base: dict[str, ExactIndex],
        tag: str,
    ) -> dict[str, str]:
        names: dict[str, str] = {}
        for kind in sorted(set(delta) | set(base)):
            if kind_of(kind) is not IndexKind.EXACT:
                continue
            width = exact_width(signal_types()[kind])
            ids: list[npt.NDArray[np.int64]] = []
            values: list[npt.NDArray[Any]] = []
            if kind in base:
                ids.append(np.asarray(base[kind].ids))
                values.append(np.asarray(base[kind].values))
            d = delta.get(kind, {})
            if d:
                keys = [k for k, pks in d.items() for _ in pks]
                ids.append(np.array([p for pks in d.values() for p in pks], np.int64))
                values.append(np.array(keys, dtype=f"S{width}"))
            all_values = np.concatenate(values) if values else np.zeros(0, f"S{width}")
            raw = np.frombuffer(all_values.tobytes(), np.uint8).reshape(-1, width)
            index = ExactIndex.build(
                np.concatenate(ids) if ids else np.zeros(0, np.int64), raw, width
            )
            name = f"exact-{kind}-{tag}.tpi"
            index.save(self.dir / name)
            names[kind] = name
        return names

    def _write_meta(
        self,
        after: tuple[int, int],
        hamming: dict[str, LiveIndex],
        exact: dict[str, str],
        video: dict[str, str],
        other_types: list[str],
    ) -> None:
        generations = {name: live.generation for name, live in hamming.items()}
        meta = {
            "format": META_FORMAT,
            "instance": self.instance,
            "seq": after[0],
            "after_id": after[1],
            "hamming": generations,
            "exact": exact,
            "videos": video,
            "other_types": other_types,
            # the names earlier versions read
            "pdq_generation": generations.get("pdq", 0),
            "video": video.get("vpdq"),
        }
        _write_json_atomic(self.meta_path, meta)
        keep = {*exact.values(), *video.values()}
        old = [*self.dir.glob("exact-*.tpi"), *self.dir.glob("video-*.tpi")]
        for p in [*old, *self.dir.glob("vpdq-*.tpi")]:
            if p.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
