"""A plugin signal type is hashed by the pipeline and matched through a fast index
without any change to tipline, and the fast index agrees with its brute-force twin.

The plugins here are toys registered at run time (an installed plugin registers the
same class through the ``tipline.signals`` entry-point group): a 64-bit average hash
(HAMMING index, matched within a radius) and a 64-bit BLAKE2b digest (EXACT index).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from tipline.banks.formats import ImportFormat
from tipline.services import banks as svc
from tipline.services.database import Database, open_database
from tipline.services.matching import Matcher
from tipline.signals.base import (
    IndexKind,
    MediaKind,
    PhotoHasher,
    Signal,
    register_signal_type,
    unregister_signal_type,
)
from tipline.signals.hashing import HashOptions, check_signal_names, hash_path
from tipline.signals.hexbits import hamming_hex, parse_hex
from tipline.signals.media import Photo


class ToyAverageHash:
    """64-bit average hash: the 8 x 8 block means of the grey image against their mean."""

    name: ClassVar[str] = "toy_ahash"
    media: ClassVar[MediaKind] = MediaKind.PHOTO
    default_threshold: ClassVar[int] = 8
    index: ClassVar[IndexKind] = IndexKind.HAMMING
    n_bytes: ClassVar[int] = 8

    def parse(self, text: str) -> str:
        return parse_hex(text, self.n_bytes, self.name)

    def distance(self, a: str, b: str) -> int:
        return hamming_hex(a, b)

    def match(self, query: str, candidates: Sequence[str], threshold: int) -> list[tuple[int, int]]:
        q = int(query, 16)
        found = [(i, (q ^ int(c, 16)).bit_count()) for i, c in enumerate(candidates)]
        return [(i, d) for i, d in found if d <= threshold]

    def hash_photo(self, photo: Photo) -> tuple[Signal, ...]:
        grey = np.asarray(photo.pixels(), np.float64).mean(axis=2)
        h, w = (grey.shape[0] // 8) * 8, (grey.shape[1] // 8) * 8
        blocks = grey[:h, :w].reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3))
        bits = (blocks > blocks.mean()).astype(np.uint8).ravel()
        return (Signal(type=self.name, value=np.packbits(bits).tobytes().hex()),)


class ToyDigest:
    """64-bit BLAKE2b of the file's bytes."""

    name: ClassVar[str] = "toy_b2"
    media: ClassVar[MediaKind] = MediaKind.PHOTO
    default_threshold: ClassVar[int] = 0
    index: ClassVar[IndexKind] = IndexKind.EXACT
    n_bytes: ClassVar[int] = 8

    def parse(self, text: str) -> str:
        return parse_hex(text, self.n_bytes, self.name)

    def distance(self, a: str, b: str) -> int:
        return 0 if a == b else 1

    def match(self, query: str, candidates: Sequence[str], threshold: int) -> list[tuple[int, int]]:
        return [(i, 0) for i, c in enumerate(candidates) if c == query]

    def hash_photo(self, photo: Photo) -> tuple[Signal, ...]:
        value = hashlib.blake2b(photo.data, digest_size=self.n_bytes).hexdigest()
        return (Signal(type=self.name, value=value),)


AHASH = ToyAverageHash()
DIGEST = ToyDigest()


@pytest.fixture
def plugins() -> Iterator[None]:
    register_signal_type(AHASH)
    register_signal_type(DIGEST)
    try:
        yield
    finally:
        unregister_signal_type(AHASH.name)
        unregister_signal_type(DIGEST.name)


@pytest.fixture
def db(db_url: str, plugins: None) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


def _picture(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> Path:
    """A benign smooth random picture (distinct seeds give distinct hashes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path)
    return path


def _flip(value: str, n: int, rng: np.random.Generator) -> str:
    x = int(value, 16)
    for bit in rng.choice(64, size=n, replace=False):
        x ^= 1 << int(bit)
    return f"{x:016x}"


def test_the_pipeline_hashes_a_plugin_type(plugins: None, tmp_path: Path) -> None:
    path = _picture(tmp_path / "p.png", 1)
    assert {"toy_ahash", "toy_b2"} <= set(check_signal_names(["toy_ahash", "toy_b2"]))
    result = hash_path(str(path), HashOptions(signals=("toy_ahash", "toy_b2", "pdq")))
    assert result.ok, result.error
    values = {s.type: s.value for s in result.signals}
    assert [s.type for s in result.signals] == ["toy_ahash", "pdq", "toy_b2"]
    assert values["toy_b2"] == hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
    grey = np.asarray(Image.open(path).convert("RGB"), np.float64).mean(axis=2)
    blocks = grey.reshape(8, 30, 8, 40).mean(axis=(1, 3))
    expected = np.packbits((blocks > blocks.mean()).astype(np.uint8).ravel()).tobytes().hex()
    assert values["toy_ahash"] == expected
    # defaults stay the built-in ones; a plugin type is computed when asked for
    default = hash_path(str(path), HashOptions())
    assert [s.type for s in default.signals] == ["pdq", "md5", "sha256"]
    assert isinstance(AHASH, PhotoHasher)


def _oracle(values: dict[str, str], query: str, threshold: int) -> set[tuple[str, int]]:
    """Brute force through the type's own ``match``: (entry id, distance)."""
    ids = list(values)
    found = AHASH.match(query, [values[i] for i in ids], threshold)
    return {(ids[row], d) for row, d in found}


def _found(matcher: Matcher, query: str) -> set[tuple[str, int]]:
    return {(m.entry_id, m.distance) for m in matcher.match_hash("toy_ahash", query)}


def test_a_plugin_hamming_type_is_matched_through_its_index(db: Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    svc.create_bank(db, "toys", thresholds={"toy_ahash": 10})
    centres = [f"{int(x):016x}" for x in rng.integers(0, 2**63, 25, dtype=np.int64)]
    values: dict[str, str] = {}
    for c, centre in enumerate(centres):
        for k in range(40):
            values[f"c{c}-{k}"] = _flip(centre, int(rng.integers(0, 16)), rng)
    lines = "".join(f"{e},toy_ahash,{v}\n" for e, v in values.items())
    text = "entry_id,signal_type,signal_value\n" + lines
    summary = svc.import_entries(db, "toys", io.BytesIO(text.encode()), ImportFormat.CSV)
    assert summary.errors == 0
    queries = [*centres, *(_flip(c, 5, rng) for c in centres)]
    index_dir = tmp_path / "index"
    with Matcher(db, index_dir, poll_interval=0) as matcher:
        # the type has its own Hamming radius index (not the brute-force fallback)
        stats = matcher.stats()
        assert stats["hamming"]["toy_ahash"] == len(values)
        assert "toy_ahash" not in stats["brute_force"]
        assert (index_dir / "toy_ahash").is_dir()
        total = 0
        for q in queries:
            expected = _oracle(values, q, 10)
            assert _found(matcher, q) == expected
            total += len(expected)
        assert total > len(queries)  # the radius search found more than exact copies
        # live additions (the delta), then a merge into new base files
        for k in range(30):
            values[f"late-{k}"] = _flip(centres[k % 5], int(rng.integers(0, 12)), rng)
            svc.add_entry(db, "toys", [f"toy_ahash:{values[f'late-{k}']}"], entry_id=f"late-{k}")
        for q in queries[:10]:
            assert _found(matcher, q) == _oracle(values, q, 10)
        matcher.merge()
        assert matcher.stats()["hamming"]["toy_ahash"] == len(values)
        for q in queries[:10]:
            assert _found(matcher, q) == _oracle(values, q, 10)
    with Matcher(db, index_dir) as reopened:
        assert not reopened.rebuilt
        for q in queries:
            assert _found(reopened, q) == _oracle(values, q, 10)


def test_plugin_signals_of_a_photo_match_end_to_end(db: Database, tmp_path: Path) -> None:
    options = HashOptions(signals=("toy_ahash", "toy_b2"))
    svc.create_bank(db, "known")
    for seed in range(6):
        result = hash_path(str(_picture(tmp_path / f"k{seed}.png", seed)), options)
        assert result.ok, result.error
        signals = [f"{s.type}:{s.value}" for s in result.signals]
        svc.add_entry(db, "known", signals, entry_id=f"known-{seed}")
    with Matcher(db, tmp_path / "index", poll_interval=0) as matcher:
        assert matcher.stats()["exact"]["toy_b2"] == 6
        # the same file: both signals match; a re-encoded copy: the perceptual one only
        same = hash_path(str(tmp_path / "k3.png"), options)
        found = {(m.entry_id, m.signal_type) for m in matcher.match_signals(same.signals)}
        assert found == {("known-3", "toy_ahash"), ("known-3", "toy_b2")}
        copy = tmp_path / "k3-copy.jpg"
        Image.open(tmp_path / "k3.png").convert("RGB").save(copy, quality=85)
        again = hash_path(str(copy), options)
        found = {(m.entry_id, m.signal_type) for m in matcher.match_signals(again.signals)}
        assert found == {("known-3", "toy_ahash")}


def test_a_type_registered_after_the_build_gets_its_index(db_url: str, tmp_path: Path) -> None:
    database = open_database(db_url)
    try:
        with Matcher(database, tmp_path / "index") as before:
            assert "toy_ahash" not in before.stats()["hamming"]
        register_signal_type(AHASH)
        try:
            svc.create_bank(database, "late")
            svc.add_entry(database, "late", ["toy_ahash:00000000000000ff"], entry_id="x")
            with Matcher(database, tmp_path / "index", poll_interval=0) as after:
                assert after.rebuilt  # the files did not know the new type
                assert after.stats()["hamming"]["toy_ahash"] == 1
                assert _found(after, "00000000000000fe") == {("x", 1)}
        finally:
            unregister_signal_type(AHASH.name)
    finally:
        database.close()
