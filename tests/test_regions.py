"""The bank-side robust tier (issue #15): region descriptors of an original
(``signals/regions.py``) against independently hashed crops and rotations; the Matcher
reporting region matches labelled, after exact ones, per-bank switchable; the CLI end
to end; the migration against the models."""

from __future__ import annotations

import functools
import io
import json
import os

import numpy as np
import pdqhash
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from _cli import run_tipline
from tipline.services import audit
from tipline.services import banks as svc
from tipline.services.bank_media import add_media_file
from tipline.services.database import open_database
from tipline.services.matching import Matcher
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.signals.pdq import bits_to_hex, pdq_hash_fast
from tipline.signals.regions import DEFAULT_GRID, RegionGrid, _work_copy, region_hashes

THRESHOLD = 31


def _picture(w: int = 640, h: int = 480, seed: int = 0) -> Image.Image:
    """A busy benign picture: gradients plus random coloured ellipses."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h)) + 64], axis=2
    ).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(8, 60))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
    return img


def _bridge(reference_dir) -> Image.Image:
    img = Image.open(reference_dir / "pdq" / "bridge-mods" / "aaa-orig.jpg").convert("RGB")
    img.thumbnail((800, 800))
    return img


@functools.cache
def _bridge_regions(reference_dir) -> list[tuple[str, str]]:
    """``region_hashes`` of :func:`_bridge`, computed once (8 tests compare with it)."""
    return region_hashes(np.asarray(_bridge(reference_dir)))


def _ref_pdq(img: Image.Image) -> int:
    """pdqhash itself on a JPEG round trip of ``img`` (what a re-shared copy gives)."""
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    pixels = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
    return int(bits_to_hex(pdqhash.compute(pixels)[0]), 16)


def _nearest(query: int, regions: list[tuple[str, str]]) -> tuple[int, str]:
    return min(((query ^ int(v, 16)).bit_count(), name) for name, v in regions)


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))


# -- the grid ---------------------------------------------------------------------------


def test_grid_cuts_stay_within_the_largest_crop_and_include_centred_half_steps():
    grid = DEFAULT_GRID
    cuts = grid.cuts()
    steps = round(grid.max_crop / grid.step)
    assert len(cuts) == len(set(cuts))
    assert all(a + b <= 2 * steps for a, b in cuts)  # half steps
    assert {(k, k) for k in range(1, steps + 1, 2)} <= set(cuts)
    assert (0, 0) in cuts
    assert grid.size() == len(cuts) ** 2 - 1 + len(grid.angles)


def test_small_pictures_give_no_regions():
    assert region_hashes(np.asarray(_picture(100, 90))) == []


@functools.cache
def _regions_of_picture(seed: int) -> tuple[dict[str, str], Image.Image]:
    """The region hashes and the work copy of ``_picture(seed=seed)``, made once per seed
    (the property test draws 25 crops of 4 pictures)."""
    pixels = np.asarray(_picture(seed=seed))
    return dict(region_hashes(pixels)), _work_copy(pixels)


@settings(max_examples=25, deadline=None)
@given(
    vertical=st.sampled_from(DEFAULT_GRID.cuts()),
    horizontal=st.sampled_from(DEFAULT_GRID.cuts()),
    seed=st.integers(0, 3),
)
def test_each_crop_region_is_the_pdq_of_that_crop(vertical, horizontal, seed):
    """Each named crop's hash equals the PDQ of the same crop of the work copy, hashed
    on its own through the RGB path (not the batched luma path), and is within a few
    bits of ``pdqhash`` itself on that crop."""
    if vertical == horizontal == (0, 0):
        return
    regions, work = _regions_of_picture(seed)
    half = DEFAULT_GRID.step / 2
    edges = (horizontal[0], vertical[0], horizontal[1], vertical[1])  # left top right bottom
    name = "crop:l{}t{}r{}b{}".format(*(f"{100 * half * n:g}" for n in edges))
    if name not in regions:  # a repeat of another region's hash (or a flat one)
        return
    crop = _crop(work, *(half * n for n in edges))
    pixels = np.ascontiguousarray(np.asarray(crop))
    assert regions[name] == pdq_hash_fast(pixels)[0]
    reference = int(bits_to_hex(pdqhash.compute(pixels)[0]), 16)
    assert (int(regions[name], 16) ^ reference).bit_count() <= 8


@pytest.mark.parametrize(
    "edit",
    [
        ("crop 5% centre", lambda i: _crop(i, 0.025, 0.025, 0.025, 0.025)),
        ("crop 10% centre", lambda i: _crop(i, 0.05, 0.05, 0.05, 0.05)),
        ("crop 5% corner", lambda i: _crop(i, 0.05, 0.05, 0, 0)),
        ("crop 10% corner", lambda i: _crop(i, 0, 0, 0.1, 0.1)),
        ("crop 7% one side", lambda i: _crop(i, 0, 0, 0.07, 0)),
        ("rotate 2", lambda i: i.rotate(2, resample=Image.Resampling.BILINEAR)),
        ("rotate -5", lambda i: i.rotate(-5, resample=Image.Resampling.BILINEAR)),
    ],
    ids=lambda e: e[0],
)
def test_crops_and_rotations_of_a_photo_land_within_the_threshold(reference_dir, edit):
    img = _bridge(reference_dir)
    regions = _bridge_regions(reference_dir)
    query = _ref_pdq(edit[1](img))
    distance, name = _nearest(query, regions)
    assert distance <= THRESHOLD, (distance, name)
    kind = "rotate" if edit[0].startswith("rotate") else "crop"
    assert name.startswith(kind + ":")


def test_plain_pdq_misses_what_the_regions_find(reference_dir):
    """The tier is needed: the 10% crop is far from the original's own PDQ."""
    img = _bridge(reference_dir)
    query = _ref_pdq(_crop(img, 0, 0, 0.1, 0.1))
    assert (query ^ _ref_pdq(img)).bit_count() > THRESHOLD


def test_unrelated_pictures_stay_far_from_every_region(reference_dir):
    known = _bridge_regions(reference_dir)
    others = [_picture(seed=s) for s in range(6)]
    pen = Image.open(reference_dir / "pdq" / "pen-and-coaster.png").convert("RGB")
    for other in [*others, pen, _crop(pen, 0.05, 0.05, 0.05, 0.05)]:
        assert _nearest(_ref_pdq(other), known)[0] > THRESHOLD


# -- the Matcher ------------------------------------------------------------------------


@pytest.fixture
def db(db_url):
    database = open_database(db_url)
    yield database
    database.close()


def _query(img: Image.Image) -> list:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    result = hash_bytes(out.getvalue(), "q.jpg", HashOptions(signals=("pdq",)))
    assert result.ok, result.error
    return list(result.signals)


def test_matcher_reports_region_matches_labelled_after_exact_ones(db, tmp_path, reference_dir):
    img = _bridge(reference_dir)
    known = tmp_path / "known.png"
    img.save(known)
    svc.create_bank(db, "known")
    entry = add_media_file(db, "known", str(known), entry_id="K1")
    with db.sessions() as s:
        added = [r for r in audit.recent(s, limit=5) if r.action == "entry.add"]
    assert json.loads(added[0].details)["regions"] > 400
    with Matcher(db, tmp_path / "index", poll_interval=0) as matcher:
        # the original itself: the exact tier, once (not again through a region)
        same = matcher.match_signals(_query(img))
        assert [(m.entry_id, m.tier, m.region) for m in same] == [("K1", None, None)]
        cropped = _crop(img, 0.1, 0.1, 0, 0)
        found = matcher.match_signals(_query(cropped))
        assert [(m.bank, m.entry_id, m.tier) for m in found] == [("known", "K1", "region")]
        m = found[0]
        assert m.region is not None and m.region.startswith("crop:")
        assert m.distance <= THRESHOLD
        assert m.matched_value is not None
        assert (int(m.matched_value, 16) ^ int(m.query_value or "", 16)).bit_count() == m.distance
        assert m.matched_value not in {s.value for s in entry.signals}  # not the plain PDQ
        turned = matcher.match_signals(_query(img.rotate(4, resample=Image.Resampling.BILINEAR)))
        assert [(x.entry_id, x.tier) for x in turned] == [("K1", "region")]
        assert (turned[0].region or "").startswith("rotate:")
        # switched off for the bank: the crop no longer matches; the original still does
        svc.update_bank(db, "known", region_matching=False)
        assert matcher.match_signals(_query(cropped)) == []
        assert [m.tier for m in matcher.match_signals(_query(img))] == [None]
        svc.update_bank(db, "known", region_matching=True)
        # a disabled entry matches through no tier
        svc.set_entries_disabled(db, "known", ["K1"], disabled=True, reason="test")
        assert matcher.match_signals(_query(cropped)) == []
        # an unrelated picture matches nothing
        svc.set_entries_disabled(db, "known", ["K1"], disabled=False)
        assert matcher.match_signals(_query(_picture(seed=3))) == []
        assert len(matcher.match_signals(_query(cropped))) == 1


def test_hash_only_entries_have_no_regions(db, tmp_path, reference_dir):
    """An entry added by its hash (a hash list) gets no regions: crops miss it."""
    img = _bridge(reference_dir)
    svc.create_bank(db, "list")
    plain = _query(img)[0].value
    svc.add_entry(db, "list", [f"pdq:{plain}"], entry_id="L1")
    with Matcher(db, tmp_path / "index", poll_interval=0) as matcher:
        assert matcher.match_signals(_query(_crop(img, 0.1, 0.1, 0, 0))) == []
        assert [m.entry_id for m in matcher.match_signals(_query(img))] == ["L1"]


def test_regions_of_a_deleted_entry_never_match_the_entry_given_its_pk(db, tmp_path, monkeypatch):
    """Index files keep rows of deleted entries; an entry pk given again (SQLite hands
    out max + 1) must not inherit them: each region hit is checked against the stored
    rows, in a Matcher that read the rows before the deletion and in one that maps the
    file written before it."""
    from tipline.services.regions import index as region_index
    from tipline.signals.base import Signal

    monkeypatch.setattr(region_index, "REBUILD_AFTER", 0)  # every refresh writes a file
    rng = np.random.default_rng(3)
    values = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(6)]
    svc.create_bank(db, "old")
    svc.add_entry(db, "old", [f"pdq:{values[0]}"], entry_id="A", regions=[("crop:x", values[1])])
    query = [Signal(type="pdq", value=values[1])]
    with Matcher(db, tmp_path / "index", poll_interval=0) as before:
        assert [(m.entry_id, m.tier) for m in before.match_signals(query)] == [("A", "region")]
    pk_a = svc.entry_numbers(db, {"old": ["A"]})[("old", "A")]
    svc.delete_bank(db, "old")
    svc.create_bank(db, "new")
    svc.add_entry(db, "new", [f"pdq:{values[2]}"], entry_id="B")
    if db.engine.dialect.name == "sqlite":
        assert svc.entry_numbers(db, {"new": ["B"]})[("new", "B")] == pk_a
    with Matcher(db, tmp_path / "index", poll_interval=0) as after:
        assert after._regions.from_file == 1  # A's row, from the file
        assert after.match_signals(query) == []
        # an entry with regions of its own matches through them
        svc.add_entry(
            db, "new", [f"pdq:{values[3]}"], entry_id="C", regions=[("crop:y", values[4])]
        )
        hit = after.match_signals([Signal(type="pdq", value=values[4])])
        assert [(m.entry_id, m.region) for m in hit] == [("C", "crop:y")]
        assert after.match_signals(query) == []


def test_bad_region_values_are_refused_and_nothing_is_stored(db):
    from tipline.errors import HashFormatError, InputError

    svc.create_bank(db, "known")
    pdq = "f" * 64
    with pytest.raises((HashFormatError, InputError)):
        svc.add_entry(db, "known", [f"pdq:{pdq}"], entry_id="E1", regions=[("crop:x", "zz")])
    with pytest.raises(InputError):
        svc.add_entry(db, "known", [f"pdq:{pdq}"], entry_id="E1", regions=[("x" * 41, pdq)])
    assert svc.show_bank(db, "known").entries == 0


# -- CLI end to end ---------------------------------------------------------------------


@pytest.fixture
def cli(db_url, tmp_path):
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
    }

    def run(*args: str):
        proc = run_tipline(args, env=env, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def test_cli_bank_add_then_match_a_crop_and_switch_the_tier(cli, tmp_path, reference_dir):
    img = _bridge(reference_dir)
    known = tmp_path / "known.jpg"
    img.save(known, quality=92)
    assert cli("bank", "create", "known").returncode == 0
    assert cli("bank", "add", "known", str(known), "--entry-id", "K1").returncode == 0
    crop = tmp_path / "crop.jpg"
    _crop(img, 0.05, 0.05, 0.05, 0.05).save(crop, quality=85)
    r = cli("match", "-f", "jsonl", str(crop))
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (row["entry_id"], row["tier"]) == ("K1", "region")
    assert row["region"].startswith("crop:") and row["distance"] <= THRESHOLD
    assert "\ttier=region\tregion=crop:" in cli("match", str(crop)).stdout
    shown = json.loads(cli("bank", "show", "known", "--json").stdout)
    assert shown["region_matching"] is True
    off = cli("bank", "set", "known", "--no-region-matching")
    assert off.returncode == 0 and "region matching off" in off.stdout
    assert cli("match", "-f", "jsonl", str(crop)).stdout.strip() == ""


# -- migration --------------------------------------------------------------------------


def test_migration_matches_models(db_url):
    from tipline.store.base import Base
    from tipline.store.db import make_engine
    from tipline.store.models import import_all_models

    import_all_models()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    ours = [d for d in diff if "bank_regions" in repr(d) or "region_matching" in repr(d)]
    assert ours == []


def test_grid_is_configurable():
    grid = RegionGrid(step=0.05, max_crop=0.10, angles=(3.0,))
    names = [n for n, _ in region_hashes(np.asarray(_picture()), grid)]
    assert "rotate:3" in names
    assert all(n.startswith(("crop:", "rotate:")) for n in names)
    assert len(names) <= grid.size()


@pytest.mark.parametrize("in_files", [False, True], ids=["memory", "files"])
@pytest.mark.parametrize("seed", [1, 2])
def test_region_index_equals_brute_force_across_rebuilds(db, monkeypatch, tmp_path, seed, in_files):
    """Base multi-index (in memory, or an index file) plus brute-force delta, rebuilt as
    rows arrive, answers exactly what a brute-force scan of every stored region answers
    (each entry once, at its closest region); with files, a new index opened on the
    folder (what a new Matcher does) reads only the rows after the file from the
    database and answers the same."""
    from tipline.services.regions import index as region_index

    monkeypatch.setattr(region_index, "REBUILD_AFTER", 40)
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, 256, 32, dtype=np.uint8)

    def near(bits: int) -> str:
        flip = np.zeros(256, np.uint8)
        flip[rng.choice(256, bits, replace=False)] = 1
        return (centre ^ np.packbits(flip)).tobytes().hex()

    svc.create_bank(db, "b")
    folder = tmp_path / "regions" if in_files else None
    instance = "test-instance"
    idx = region_index.RegionIndex(folder, instance)
    stored: list[tuple[int, str, str]] = []  # (entry number, region, value)
    for batch in range(4):
        for k in range(5):
            n = batch * 5 + k
            regions = [(f"crop:{n}-{j}", near(int(rng.integers(0, 60)))) for j in range(12)]
            entry = svc.add_entry(db, "b", [f"pdq:{near(100)}"], entry_id=f"E{n}", regions=regions)
            assert entry.entry_id == f"E{n}"
            stored += [(n, name, value) for name, value in regions]
        with db.sessions() as s:
            idx.refresh(s)
        assert len(idx) == len(stored)
        pk_of = svc.entry_numbers(db, {"b": [f"E{n}" for n in range(batch * 5 + 5)]})
        reopened = region_index.RegionIndex(folder, instance) if in_files else None
        if reopened is not None:
            with db.sessions() as s:
                read = reopened.refresh(s)
            assert reopened.from_file + read == len(stored) == len(reopened)
            assert reopened.from_file == (len(idx._base) if idx._base is not None else 0)
        for radius in (10, 31, 45):
            q = near(int(rng.integers(0, 20)))
            expected: dict[int, tuple[int, str]] = {}
            for n, name, value in stored:
                d = (int(q, 16) ^ int(value, 16)).bit_count()
                pk = pk_of[("b", f"E{n}")]
                if d <= radius and (pk not in expected or d < expected[pk][0]):
                    expected[pk] = (d, name)
            got = {h.entry_pk: (h.distance, h.region, h.value) for h in idx.search(q, radius)}
            assert got == {
                pk: (d, name, dict((r, v) for _, r, v in stored)[name])
                for pk, (d, name) in expected.items()
            }
            if reopened is not None:
                again = reopened.search(q, radius)
                assert {h.entry_pk: (h.distance, h.region, h.value) for h in again} == got
    assert idx._base is not None  # the base index was rebuilt on the way
    if folder is not None:
        assert len(list(folder.glob("regions-*.tpi"))) == 1  # older files removed


def test_region_index_file_of_another_database_or_damaged_is_not_used(db, tmp_path, monkeypatch):
    """A file built from another database, or damaged, is ignored: every row is read
    from the database and searches stay exact."""
    from tipline.services.regions import index as region_index

    monkeypatch.setattr(region_index, "REBUILD_AFTER", 10)
    svc.create_bank(db, "b")
    rng = np.random.default_rng(7)
    values = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(30)]
    regions = [(f"crop:{j}", v) for j, v in enumerate(values)]
    svc.add_entry(db, "b", [f"pdq:{values[0]}"], entry_id="E", regions=regions)
    folder = tmp_path / "regions"
    with db.sessions() as s:
        region_index.RegionIndex(folder, "one").refresh(s)
    (file,) = folder.glob("regions-*.tpi")

    def fresh(instance: str) -> region_index.RegionIndex:
        idx = region_index.RegionIndex(folder, instance)
        with db.sessions() as s:
            idx.refresh(s)
        assert idx.search(values[17], 0)[0].region == "crop:17"
        return idx

    assert fresh("one").from_file == 30
    assert fresh("two").from_file == 0  # another database's file (and now rebuilt)
    (file,) = folder.glob("regions-*.tpi")
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    assert fresh("two").from_file == 0
