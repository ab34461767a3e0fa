"""Hash-list formats: round trips (hypothesis), per-line errors, streaming, hostile XML."""

from __future__ import annotations

import io
import itertools
import json
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipline.banks.formats import (
    ImportFormat,
    ParsedEntry,
    guess_format,
    read_entries,
    write_entries,
)
from tipline.banks.formats.vics import _JsonStream
from tipline.banks.model import BankEntry, BankSignal
from tipline.errors import ImportFormatError

HEX = "0123456789abcdef"


def _read(fmt: ImportFormat, data: bytes) -> tuple[list[ParsedEntry], list[ImportFormatError]]:
    good: list[ParsedEntry] = []
    bad: list[ImportFormatError] = []
    for item in read_entries(fmt, io.BytesIO(data), path="f"):
        (bad if isinstance(item, ImportFormatError) else good).append(item)  # type: ignore[arg-type]
    return good, bad


def _write(fmt: ImportFormat, entries: list[BankEntry]) -> bytes:
    out = io.BytesIO()
    report = write_entries(fmt, entries, out)
    assert report.entries == len(entries)
    return out.getvalue()


def _key(e: ParsedEntry | BankEntry) -> tuple[object, ...]:
    return (
        e.entry_id,
        tuple(sorted(e.signals, key=lambda s: (s.type, s.value))),
        tuple(e.labels),
        e.source,
    )


hexes = {n: st.text(HEX, min_size=2 * n, max_size=2 * n) for n in (16, 20, 32)}
pdq = hexes[32].map(lambda v: BankSignal("pdq", v))
md5 = hexes[16].map(lambda v: BankSignal("md5", v))
sha1 = hexes[20].map(lambda v: BankSignal("sha1", v))
sha256 = hexes[32].map(lambda v: BankSignal("sha256", v))
ids = st.text(st.characters(categories=["L", "N"], max_codepoint=0x2FF), min_size=1, max_size=40)
labels = st.lists(st.sampled_from(["A1", "A2", "B1", "B2", "other label"]), max_size=3, unique=True)
sources = st.one_of(st.none(), st.text("abcdefgh xyz,;\"'<>&", min_size=1, max_size=30))


def _entry(
    entry_id: str, signals: list[BankSignal], lab: list[str], source: str | None
) -> BankEntry:
    return BankEntry("b", entry_id, tuple(dict.fromkeys(signals)), tuple(lab), source)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            ids,
            st.lists(st.one_of(pdq, md5, sha1, sha256), min_size=1, max_size=4),
            labels,
            sources,
        ),
        max_size=12,
        unique_by=lambda t: t[0].strip(),
    )
)
def test_csv_round_trip(items):
    entries = [
        _entry(i.strip(), s, lab, (src.strip() or None) if src else None)
        for i, s, lab, src in items
        if i.strip()
    ]
    good, bad = _read(ImportFormat.CSV, _write(ImportFormat.CSV, entries))
    assert bad == []
    assert [_key(g) for g in good] == [_key(e) for e in entries]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(pdq, md5, sha1, sha256), max_size=20, unique=True))
def test_hma_text_and_csv_round_trip(signals):
    from tipline.banks.formats import derived_entry_id

    entries = [BankEntry("b", derived_entry_id(s), (s,)) for s in signals]
    for fmt in (ImportFormat.HMA, ImportFormat.HMA_CSV):
        good, bad = _read(fmt, _write(fmt, entries))
        assert bad == []
        assert [_key(g) for g in good] == [_key(e) for e in entries]


def test_hma_reads_threatexchange_lines_and_reports_bad_ones():
    data = (
        b"# comment\n\n"
        b"pdq " + b"a" * 64 + b"\n"
        b"PDQ " + b"B" * 64 + b" q=100 /some/path.jpg\n"
        b"pdq " + b"c" * 63 + b"\n"
        b"pdq " + b"g" * 64 + b"\n"
        b"photodna abc\n"
        b"pdq\n"
        b"photo_md5 " + b"d" * 32 + b"\n"
        b"\xff\xfe bad bytes\n"
    )
    good, bad = _read(ImportFormat.HMA, data)
    assert [(g.line, g.signals[0].type, g.signals[0].value[:3]) for g in good] == [
        (3, "pdq", "aaa"),
        (4, "pdq", "bbb"),
        (9, "md5", "ddd"),
    ]
    assert [b.line for b in bad] == [5, 6, 7, 8, 10]
    assert "64 hex characters, got 63" in str(bad[0]) and str(bad[0]).startswith("f:5:")
    assert "non-hex" in str(bad[1])
    assert "unknown signal type 'photodna'" in str(bad[2])
    assert "UTF-8" in str(bad[4])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            ids,
            st.one_of(
                st.lists(st.one_of(md5, sha1, pdq, sha256), min_size=1, max_size=3),
                st.lists(
                    hexes[16].map(lambda v: BankSignal("video_md5", v)), min_size=1, max_size=1
                ),
            ),
            st.lists(st.sampled_from(["A1", "A2", "B1", "B2"]), max_size=1),
            st.one_of(
                st.none(),
                st.builds(
                    lambda n, m: f"ncmec member {n} ({m})",
                    st.integers(0, 10**6),
                    st.text("abc xyz&<", min_size=1, max_size=12).map(str.strip).filter(bool),
                ),
            ),
        ),
        max_size=8,
        unique_by=lambda t: t[0].strip(),
    )
)
def test_ncmec_round_trip(items):
    entries = []
    for i, s, lab, src in items:
        if not i.strip():
            continue
        sigs = tuple(dict.fromkeys(s))
        if len({x.type for x in sigs}) != len(sigs):  # one fingerprint per type in NCMEC
            sigs = tuple({x.type: x for x in sigs}.values())
        entries.append(BankEntry("b", i.strip(), sigs, tuple(lab), src))
    good, bad = _read(ImportFormat.NCMEC, _write(ImportFormat.NCMEC, entries))
    assert bad == []
    images = [e for e in entries if not any(s.type.startswith("video") for s in e.signals)]
    videos = [e for e in entries if any(s.type.startswith("video") for s in e.signals)]
    assert sorted(map(_key, good)) == sorted(map(_key, images + videos))


def test_ncmec_counts_unsupported_fingerprints_and_deletions():
    pdq_hex = "f" * 64
    xml = f"""<?xml version="1.0"?>
<queryResult>
  <images maxTimestamp="2024-01-01T00:00:00Z">
    <image>
      <member id="7">Example ESP</member>
      <id>img-1</id>
      <classification>A1</classification>
      <fingerprints>
        <md5>{"A" * 32}</md5><sha1>{"b" * 40}</sha1><pdq>{pdq_hex}</pdq>
        <pdna>1,2,3</pdna><netclean>xx</netclean>
      </fingerprints>
    </image>
    <image><member id="7">Example ESP</member><id>img-2</id>
      <fingerprints><pdna>1,2,3</pdna></fingerprints></image>
    <image><member id="7"/><fingerprints><md5>{"c" * 32}</md5></fingerprints></image>
    <image><id>img-4</id><fingerprints><md5>nothex</md5></fingerprints></image>
  </images>
  <videos>
    <video><member id="8">Other</member><id>vid-1</id><classification>B2</classification>
      <fingerprints><md5>{"d" * 32}</md5><tmk_pdqf>abc</tmk_pdqf><ssvh_pdna>x</ssvh_pdna>
      </fingerprints></video>
  </videos>
  <deletedImages><deletedImage><member id="7"/><id>img-9</id></deletedImage></deletedImages>
</queryResult>
""".encode()
    good, bad = _read(ImportFormat.NCMEC, xml)
    by_id = {g.entry_id: g for g in good}
    img = by_id["img-1"]
    assert [s.type for s in img.signals] == ["md5", "sha1", "pdq"]
    assert img.signals[0].value == "a" * 32  # canonical lower case
    assert img.labels == ("A1",) and img.source == "ncmec member 7 (Example ESP)"
    assert img.unsupported == ("PDNA (photo)", "NETCLEAN (photo)")
    assert by_id["img-2"].signals == () and by_id["img-2"].unsupported == ("PDNA (photo)",)
    vid = by_id["vid-1"]
    assert vid.signals == (BankSignal("video_md5", "d" * 32),) and vid.media == "video"
    assert vid.unsupported == ("TMK_PDQF (video)", "SSVH_PDNA (video)")
    assert by_id["img-9"].deleted
    assert len(bad) == 2
    assert "without an <id>" in str(bad[0]) and bad[0].line == 15
    assert "md5" in str(bad[1]) and bad[1].line == 16


@pytest.mark.parametrize(
    "doc",
    [
        b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "aaaa">]><q><images><image><id>&a;</id>'
        b"</image></images></q>",
        b'<!DOCTYPE q SYSTEM "file:///etc/passwd"><q/>',
    ],
)
def test_ncmec_refuses_dtds_and_entities(doc):
    good, bad = _read(ImportFormat.NCMEC, doc)
    assert good == [] and len(bad) == 1 and "malformed XML" in str(bad[0])


def test_ncmec_malformed_xml_keeps_earlier_entries():
    doc = (
        b"<q><images>\n<image><id>a</id><fingerprints><md5>" + b"a" * 32 + b"</md5></fingerprints>"
        b"</image>\n<image><id>b</id><oops></image></images></q>"
    )
    good, bad = _read(ImportFormat.NCMEC, doc)
    assert [g.entry_id for g in good] == ["a"]
    assert len(bad) == 1 and bad[0].line == 3


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(0, 10**12).map(str), ids),
            st.lists(st.one_of(md5, sha1), min_size=1, max_size=2, unique_by=lambda s: s.type),
            st.one_of(st.none(), st.integers(0, 5)),
            st.lists(st.sampled_from(["series-x", "tag y"]), max_size=2, unique=True),
        ),
        max_size=10,
        unique_by=lambda t: t[0].strip(),
    )
)
def test_vics_round_trip(items):
    entries = []
    for i, sigs, cat, tags in items:
        if not i.strip():
            continue
        lab = ((f"vics:{cat}",) if cat is not None else ()) + tuple(tags)
        entries.append(BankEntry("b", i.strip(), tuple(sigs), lab, "vics"))
    good, bad = _read(ImportFormat.VICS, _write(ImportFormat.VICS, entries))
    assert bad == []
    assert [_key(g) for g in good] == [_key(e) for e in entries]


def test_vics_reports_unknown_fields_photodna_and_bad_items():
    doc = {
        "odata.metadata": "http://example/$metadata",
        "odata.extra": {"nested": [1, 2, {"x": "]"}]},
        "value": [
            {
                "MediaID": 1,
                "Category": 1,
                "MD5": "A" * 32,
                "SHA1": "b" * 40,
                "IsDistributed": True,
                "Series": "s",
                "PhotoDNA": "abc",
            },
            {"MediaID": 2, "MD5": "zz"},
            {"Category": 2, "MD5": "c" * 32},
            ["not", "an", "object"],
            {"MediaID": "x-5", "SHA1": "d" * 40},
        ],
    }
    text = json.dumps(doc, indent=1).encode()
    good, bad = _read(ImportFormat.VICS, text)
    assert [g.entry_id for g in good] == ["1", "x-5"]
    first = good[0]
    assert first.labels == ("vics:1",) and first.unsupported == ("PhotoDNA",)
    assert first.ignored_fields == ("IsDistributed", "Series")
    assert [s.type for s in first.signals] == ["md5", "sha1"]
    assert len(bad) == 3
    lines = text.decode().splitlines()
    for err in bad:  # each error points at the line where its item starts
        assert lines[err.line - 1].strip() in ("{", "[")


def test_vics_structural_error_keeps_earlier_items():
    text = b'{"value": [\n{"MediaID": 1, "MD5": "' + b"a" * 32 + b'"},\n{"MediaID": 2, "MD5": }\n]}'
    good, bad = _read(ImportFormat.VICS, text)
    assert [g.entry_id for g in good] == ["1"]
    assert len(bad) == 1 and bad[0].line == 3 and "malformed JSON" in str(bad[0])


def test_vics_bare_array_and_empty():
    assert _read(ImportFormat.VICS, b"[]") == ([], [])
    good, _ = _read(ImportFormat.VICS, b'[{"MediaID": 3, "MD5": "' + b"e" * 32 + b'"}]')
    assert [g.entry_id for g in good] == ["3"]
    good, bad = _read(ImportFormat.VICS, b'{"odata.metadata": "x"}')
    assert good == [] and 'no "value" array' in str(bad[0])


def test_vics_streams_across_chunk_boundaries(monkeypatch):
    import tipline.banks.formats.vics as vics

    monkeypatch.setattr(vics, "_CHUNK", 7)  # every value straddles several reads
    items = [{"MediaID": i, "MD5": f"{i:032x}", "Category": 12345678} for i in range(50)]
    text = json.dumps({"value": items}).encode()
    good, bad = _read(ImportFormat.VICS, text)
    assert bad == [] and [g.entry_id for g in good] == [str(i) for i in range(50)]
    assert all(g.labels == ("vics:12345678",) for g in good)
    js = _JsonStream(io.BytesIO(b"  123456 "), None)
    assert js.value() == 123456


class _Generated(io.RawIOBase):
    """A huge file produced on the fly (never held in memory); counts bytes handed out."""

    def __init__(self, head: bytes, line, count: int, tail: bytes) -> None:
        self.parts = itertools.chain([head], map(line, range(count)), [tail])
        self.buf = b""
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        # lines gathered in a list and joined once (appending each ~70-byte line to the
        # buffer copied the buffer per line: most of these tests' CPU)
        parts, have = [self.buf], len(self.buf)
        for part in self.parts:
            parts.append(part)
            have += len(part)
            if have >= len(b):
                break
        data = b"".join(parts)
        n = min(len(b), len(data))
        b[:n] = data[:n]
        self.buf = data[n:]
        self.consumed += n
        return n


STREAM_CASES = [
    (ImportFormat.HMA, b"", lambda i: b"pdq %064x\n" % i, b""),
    (
        ImportFormat.CSV,
        b"entry_id,signal_type,signal_value\n",
        lambda i: b"e%d,md5,%032x\n" % (i, i),
        b"",
    ),
    (
        ImportFormat.VICS,
        b'{"value": [\n',
        lambda i: b'{"MediaID": %d, "MD5": "%032x"},\n' % (i, i),
        b'{"MediaID": -1, "MD5": "' + b"0" * 32 + b'"}]}',
    ),
    (
        ImportFormat.NCMEC,
        b"<queryResult><images>\n",
        lambda i: (
            b"<image><id>%d</id><fingerprints><md5>%032x</md5></fingerprints></image>\n" % (i, i)
        ),
        b"</images></queryResult>",
    ),
]


@pytest.mark.parametrize(("fmt", "head", "line", "tail"), STREAM_CASES)
def test_readers_stream_a_huge_file(fmt, head, line, tail):
    """A ~2 GB list: the first entries arrive after reading only a few MiB of it."""
    raw = _Generated(head, line, 25_000_000, tail)
    items = read_entries(fmt, io.BufferedReader(raw, 1 << 16), path="big")
    for n, item in enumerate(items):
        assert not isinstance(item, ImportFormatError), item
        if n == 20_000:
            break
    assert raw.consumed < 8 * 1024 * 1024, raw.consumed


@pytest.mark.parametrize(("fmt", "head", "line", "tail"), STREAM_CASES)
def test_readers_memory_does_not_grow_with_input(fmt, head, line, tail, monkeypatch):
    import tipline.banks.formats.ncmec as ncmec
    import tipline.banks.formats.vics as vics

    # small read chunks so that both inputs span many of them
    monkeypatch.setattr(ncmec, "_CHUNK", 16 * 1024)
    monkeypatch.setattr(vics, "_CHUNK", 16 * 1024)

    def peak(count: int) -> int:
        stream = io.BufferedReader(_Generated(head, line, count, tail), 1 << 16)
        tracemalloc.start()
        try:
            n = sum(1 for item in read_entries(fmt, stream) if isinstance(item, ParsedEntry))
            return tracemalloc.get_traced_memory()[1] if n >= count else -1
        finally:
            tracemalloc.stop()

    small, large = peak(2_000), peak(12_000)
    assert small > 0 and large > 0
    assert large < small * 1.5 + 256 * 1024, (small, large)


def test_guess_format():
    assert guess_format("x.XML") is ImportFormat.NCMEC
    assert guess_format("vics.json") is ImportFormat.VICS
    assert guess_format("a.csv") is ImportFormat.CSV
    assert guess_format("hashes.txt") is ImportFormat.HMA


def test_csv_header_and_grouping_rules():
    data = (
        "Signal_Type,Value,ID,Tags\n"
        f"pdq,{'a' * 64},e1,A1;B1\n"
        f"md5,{'b' * 32},e1,\n"
        f"md5,{'c' * 32},e2,\n"
        f"sha1,{'d' * 39},e3,\n"
    ).encode()
    good, bad = _read(ImportFormat.CSV, data)
    assert [(g.entry_id, len(g.signals), g.labels, g.line) for g in good] == [
        ("e1", 2, ("A1", "B1"), 2),
        ("e2", 1, (), 4),
    ]
    assert len(bad) == 1 and bad[0].line == 5
    good, bad = _read(ImportFormat.CSV, b"foo,bar\n1,2\n")
    assert good == [] and "header" in str(bad[0])


def _vpdq_value(n: int) -> str:
    return "\n".join(f"{i},{90 + i},{i + 1:064x},{float(i):.3f}" for i in range(n))


def test_hma_text_writes_vpdq_in_the_pytx_json_form_and_reads_it_back():
    entry = BankEntry(bank="b", entry_id="v", signals=(BankSignal("vpdq", _vpdq_value(3)),))
    data = _write(ImportFormat.HMA, [entry])
    line = data.decode().strip()
    kind, value = line.split(" ", 1)
    assert kind == "vpdq" and value.startswith('["') and "\n" not in value
    vpdq = pytest.importorskip("threatexchange.extensions.vpdq.vpdq")
    assert vpdq.VPDQSignal.validate_signal_str(value) == value
    good, bad = _read(ImportFormat.HMA, data + b"vpdq " + value.encode() + b" q=100 some/path\n")
    assert not bad
    assert [e.signals[0].value for e in good] == [_vpdq_value(3)] * 2


def test_csv_reads_threatexchange_dataset_csv():
    """``threatexchange dataset -P --csv``: signal_type,signal_str,collab,category,tags."""
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["signal_type", "signal_str", "collab", "category", "tags"])
    writer.writeheader()
    pytx_vpdq = json.dumps([f"{i + 1:064x},{90 + i},{float(i):.3}" for i in range(3)])
    rows = [
        ("pdq", "a" * 64, "Sample Data", "POSITIVE_CLASS", "tag1 tag2"),
        ("vpdq", pytx_vpdq, "Sample Data", "POSITIVE_CLASS", ""),
        ("pdq", "b" * 64, "Other", "NEGATIVE_CLASS", "fp"),
        ("video_md5", "c" * 32, "Other", "INVESTIGATION_SEED", ""),
        ("pdq", "zz", "Other", "POSITIVE_CLASS", ""),
        ("pdq", "d" * 64, "Other", "NEGATIVE_CLASS", ""),  # last: nothing read twice
    ]
    for kind, value, collab, category, tags in rows:
        writer.writerow(
            {
                "signal_type": kind,
                "signal_str": value,
                "collab": collab,
                "category": category,
                "tags": tags,
            }
        )
    data = buf.getvalue().encode()
    assert guess_format("collab.csv") is ImportFormat.CSV
    for fmt in (ImportFormat.CSV, ImportFormat.HMA_CSV):
        good, bad = _read(fmt, data)
        assert [e.line for e in bad] == [6]
        by_value = {e.signals[0].value if e.signals else "skipped": e for e in good}
        first = by_value["a" * 64]
        assert first.labels == ("tag1", "tag2") and first.source == "Sample Data"
        assert by_value[_vpdq_value(3)].signals[0].type == "vpdq"
        assert by_value["c" * 32].labels == ("INVESTIGATION_SEED",)
        assert by_value["skipped"].signals == ()  # the NEGATIVE_CLASS row is not imported
        assert len(good) == 5 and sum(1 for e in good if e.signals) == 3
