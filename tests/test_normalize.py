"""Query-side normalisation (``signals/normalize.py``): the box finder on generated
pictures, its PDQ variants against a brute-force crop hashed with ``pdqhash``, and
``tipline match`` (normalised by default) end to end against a bank entry added from
the original."""

from __future__ import annotations

import io
import os

import numpy as np
import pdqhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageOps

from _cli import run_tipline
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.signals.normalize import Box, is_normalized, normalize_boxes
from tipline.signals.pdq import bits_to_hex


def _picture(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    """A busy benign picture: smooth gradients plus random coloured ellipses."""
    rng = np.random.default_rng(seed)
    # by broadcasting: np.mgrid's full-size index planes cost 4 s of CPU at 3600x5400
    x, y = np.arange(w)[None, :], np.arange(h)[:, None]
    base = np.empty((h, w, 3), np.uint8)
    base[..., 0] = x * 255 // w
    base[..., 1] = y * 255 // h
    base[..., 2] = (x + y) * 127 // (w + h) + 64
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(5, 40))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
    return img


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def _close(box: Box, expected: Box, slack: int = 2) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(box, expected, strict=True))


def _found(boxes: dict[str, Box], expected: Box, slack: int = 2) -> bool:
    """Whether one of the variants is the expected box (equal boxes are named once)."""
    return any(_close(box, expected, slack) for box in boxes.values())


def test_plain_picture_has_no_boxes():
    assert normalize_boxes(_pixels(_picture())) == {}


@settings(max_examples=30, deadline=None)
@given(
    border=st.integers(min_value=8, max_value=60),
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    seed=st.integers(0, 3),
)
def test_padding_of_any_width_and_colour_is_trimmed(border, colour, seed):
    img = _picture(seed=seed)
    padded = ImageOps.expand(img, border=border, fill=colour)
    boxes = normalize_boxes(_pixels(padded))
    expected = Box(border, border + img.height, border, border + img.width)
    assert _close(boxes["trim"], expected), (boxes, expected)


@pytest.mark.parametrize("bar", [12, 30, 48])
def test_letterbox_bars_are_trimmed(bar):
    img = _picture()
    canvas = Image.new("RGB", (img.width, img.height + 2 * bar), (0, 0, 0))
    canvas.paste(img, (0, bar))
    boxes = normalize_boxes(_pixels(canvas))
    assert _close(boxes["trim"], Box(bar, bar + img.height, 0, img.width))


@pytest.mark.parametrize("where", ["top", "bottom"])
def test_caption_band_with_text_is_cut(where):
    img = _picture()
    bar = 50
    canvas = Image.new("RGB", (img.width, img.height + bar), (255, 255, 255))
    top = bar if where == "top" else 0
    canvas.paste(img, (0, top))
    y = bar // 3 if where == "top" else img.height + bar // 3
    ImageDraw.Draw(canvas).text((10, y), "a caption on a plain bar", fill=(0, 0, 0))
    boxes = normalize_boxes(_pixels(canvas))
    assert _close(boxes["uncaption"], Box(top, top + img.height, 0, img.width))


def test_screenshot_frame_needs_trim_and_uncaption():
    img = _picture()
    w, h = img.size
    canvas = Image.new("RGB", (w + 120, h + 120), (40, 90, 140))  # the desktop
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((50, 30, 50 + w + 20, 30 + h + 50), fill=(225, 225, 225))  # the window
    draw.text((70, 40), "photo.jpg - Image Viewer", fill=(0, 0, 0))
    canvas.paste(img, (60, 70))
    boxes = normalize_boxes(_pixels(canvas))
    assert _close(boxes["trim+uncaption"], Box(70, 70 + h, 60, 60 + w))


def test_boxes_keep_enough_of_the_area():
    img = _picture()
    # a 40 px picture inside a huge uniform canvas: trimmed away to < 40% of the area
    canvas = Image.new("RGB", (img.width * 3, img.height * 3), (255, 255, 255))
    canvas.paste(img, (img.width, img.height))
    assert normalize_boxes(_pixels(canvas)) == {}


def _with_caption(img: Image.Image, bar: int, where: str, colour, ink) -> Image.Image:
    canvas = Image.new("RGB", (img.width, img.height + bar), colour)
    canvas.paste(img, (0, bar if where == "top" else 0))
    y = bar // 3 if where == "top" else img.height + bar // 3
    ImageDraw.Draw(canvas).text((10, y), "a caption on a plain bar", fill=ink)
    return canvas


def _white_top_picture(w: int = 320, h: int = 240) -> Image.Image:
    """A picture whose top is mostly white: dark patches at both sides only."""
    img = _picture(w, h, seed=3)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, h // 3), fill=(255, 255, 255))
    draw.rectangle((0, 0, w // 8, h // 3), fill=(20, 20, 20))
    draw.rectangle((w - w // 8, 0, w, h // 3), fill=(20, 20, 20))
    return img


@pytest.mark.parametrize("where", ["top", "bottom"])
def test_caption_over_a_picture_whose_edge_is_the_bar_colour(where):
    # the picture's own white edge continues the white bar past MAX_CAPTION, so the
    # band of the bar's colour is refused; ``frame`` cuts where the picture starts
    img = _white_top_picture()
    if where == "bottom":
        img = ImageOps.flip(img)
    top = 40 if where == "top" else 0
    boxes = normalize_boxes(_pixels(_with_caption(img, 40, where, (255, 255, 255), (0, 0, 0))))
    assert "uncaption" not in boxes
    assert _found(boxes, Box(top, top + img.height, 0, img.width)), boxes


def test_caption_kept_apart_from_the_pictures_own_dark_bottom():
    # a dark, fading bottom edge looks like a second caption band to ``uncaption``
    img = _picture(seed=4)
    w, h = img.size
    shade = np.asarray(img).astype(np.float64)
    # a night sky: the lower 60% darkens slowly to near black, with grain
    y = np.arange(h)[:, None, None]
    light = np.where(y < 0.4 * h, 1.0, ((h - y) / (0.6 * h)) ** 3)
    grain = np.random.default_rng(4).normal(0, 3, shade.shape)
    img = Image.fromarray(np.clip(shade * light + 6 + grain, 0, 255).astype(np.uint8))
    boxes = normalize_boxes(_pixels(_with_caption(img, 50, "top", (255, 255, 255), (0, 0, 0))))
    assert boxes["uncaption"].bottom < 50 + h - 20  # the dark sky taken for a band
    assert _found(boxes, Box(50, 50 + h, 0, w)), boxes


def _window(img: Image.Image, frame=(225, 225, 225)) -> tuple[Image.Image, Box]:
    w, h = img.size
    canvas = Image.new("RGB", (w + 200, h + 200), (40, 90, 140))  # the desktop
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((90, 60, 90 + w + 20, 60 + h + 50), fill=frame)
    draw.text((110, 70), "photo.jpg - Image Viewer", fill=(0, 0, 0))
    canvas.paste(img, (100, 100))
    return canvas, Box(100, 100 + h, 100, 100 + w)


def test_window_frame_beside_a_picture_edge_of_nearly_its_colour():
    # the picture's edges are 219..225 grey (within TOLERANCE of the 225 frame) and
    # fade into a gradient: ``frame`` stops at the step between frame and picture
    img = _picture(640, 480, seed=5)
    w, h = img.size
    a = np.asarray(img).astype(np.float64)
    y, x = np.mgrid[0:h, 0:w]
    edge = np.minimum.reduce([x, y, w - 1 - x, h - 1 - y]).astype(np.float64)
    grey = (219 - edge * 0.4)[:, :, None]
    keep = np.clip((edge - 20) / 20, 0, 1)[:, :, None]
    img = Image.fromarray((a * keep + grey * (1 - keep)).astype(np.uint8))
    canvas, expected = _window(img)
    for data in (_pixels(canvas), _pixels(Image.open(io.BytesIO(_jpeg(canvas))))):
        boxes = normalize_boxes(data)
        assert _found(boxes, expected), boxes


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _ink(colour) -> tuple[int, int, int]:
    return (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)


@settings(max_examples=40, deadline=None)
@given(
    share=st.floats(min_value=0.06, max_value=0.28),
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    where=st.sampled_from(["top", "bottom", "both"]),
    seed=st.integers(0, 5),
)
def test_caption_of_any_height_and_colour_gives_back_the_picture(share, colour, where, seed):
    img = _picture(seed=seed)
    bar = int(img.height * share / (1 - share))
    if where == "both":  # a meme: a band above and one below
        top = bar
        canvas = _with_caption(img, bar, "top", colour, _ink(colour))
        canvas = _with_caption(canvas, bar, "bottom", colour, _ink(colour))
    else:
        top = bar if where == "top" else 0
        canvas = _with_caption(img, bar, where, colour, _ink(colour))
    expected = Box(top, top + img.height, 0, img.width)
    boxes = normalize_boxes(_pixels(canvas))
    assert _found(boxes, expected), (boxes, expected)


@settings(max_examples=15, deadline=None)
@given(
    frame=st.tuples(*[st.integers(150, 255)] * 3),
    seed=st.integers(0, 5),
    quality=st.sampled_from([None, 95]),
)
def test_window_screenshot_of_any_frame_colour_gives_back_the_picture(frame, seed, quality):
    # (a picture under 40% of the screenshot's area is not cut out: MIN_AREA; a JPEG of
    # quality 80 decoded to RGB smears the thin frame's chroma past TOLERANCE: the fast
    # decoder's luma does not, see docs/robustness.md)
    canvas, expected = _window(_picture(480, 360, seed=seed), frame)
    pixels = _pixels(canvas if quality is None else Image.open(io.BytesIO(_jpeg(canvas, quality))))
    boxes = normalize_boxes(pixels)
    assert _found(boxes, expected), (boxes, expected)


def _valid(boxes: dict[str, Box], h: int, w: int) -> bool:
    return all(
        0 <= b.top < b.bottom <= h and 0 <= b.left < b.right <= w and b.area >= 0.4 * h * w
        for b in boxes.values()
    )


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    kind=st.sampled_from(["flat", "noise", "stripes", "bars"]),
    seed=st.integers(0, 2**16),
)
def test_never_crashes_on_tiny_flat_or_odd_images(h, w, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "flat":
        pixels = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    elif kind == "noise":
        pixels = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    elif kind == "stripes":
        pixels = np.repeat(rng.integers(0, 256, (h, 1, 3)), w, axis=1).astype(np.uint8)
    else:
        pixels = np.zeros((h, w, 3), np.uint8)
        pixels[h // 4 : h - h // 4, w // 4 : w - w // 4] = rng.integers(0, 256, (1, 1, 3))
    boxes = normalize_boxes(pixels)
    assert _valid(boxes, h, w)
    grey = np.lib.stride_tricks.as_strided(
        np.ascontiguousarray(pixels[:, :, 0]), shape=(h, w, 3), strides=(w, 1, 0)
    )
    assert _valid(normalize_boxes(grey), h, w)


def test_huge_flat_and_framed_images():
    flat = np.full((6000, 4000, 3), 200, np.uint8)
    assert normalize_boxes(flat) == {}
    framed = np.full((6000, 4000, 3), 225, np.uint8)
    inner = np.asarray(_picture(3600, 5400, seed=1))
    framed[300:5700, 200:3800] = inner
    boxes = normalize_boxes(framed)
    assert _close(boxes["trim"], Box(300, 5700, 200, 3800), slack=3), boxes


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("decode", [DecodeMode.EXACT, DecodeMode.FAST])
def test_variant_hash_equals_brute_force_crop_hashed_with_pdqhash(decode):
    img = _picture(seed=2)
    padded = ImageOps.expand(img, border=24, fill=(255, 255, 255))
    data = _png(padded)
    result = hash_bytes(data, "x.png", HashOptions(signals=("pdq",), normalize=True, decode=decode))
    by_variant = {s.variant: s.value for s in result.signals}
    assert set(by_variant) >= {None, "trim"}
    # brute force: decode with Pillow, crop by hand, hash with the reference library
    pixels = _pixels(Image.open(io.BytesIO(data)))
    box = normalize_boxes(pixels)["trim"]
    crop = np.ascontiguousarray(pixels[box.top : box.bottom, box.left : box.right])
    bits, _ = pdqhash.compute(crop)
    twin = int(bits_to_hex(bits), 16)
    distance = (int(by_variant["trim"], 16) ^ twin).bit_count()
    assert distance <= (0 if decode is DecodeMode.EXACT else 8)
    # and the crop is the picture: close to the unpadded original's PDQ
    original = int(bits_to_hex(pdqhash.compute(_pixels(img))[0]), 16)
    assert (twin ^ original).bit_count() <= 31


@pytest.mark.parametrize("decode", [DecodeMode.EXACT, DecodeMode.FAST])
def test_frame_variant_hash_equals_brute_force_crop_hashed_with_pdqhash(decode):
    img = _white_top_picture()
    data = _png(_with_caption(img, 40, "top", (255, 255, 255), (0, 0, 0)))
    options = HashOptions(signals=("pdq",), normalize=True, decode=decode)
    by_variant = {s.variant: s.value for s in hash_bytes(data, "x.png", options).signals}
    pixels = _pixels(Image.open(io.BytesIO(data)))
    box = normalize_boxes(pixels)["frame"]
    assert _close(box, Box(40, 40 + img.height, 0, img.width))
    crop = np.ascontiguousarray(pixels[box.top : box.bottom, box.left : box.right])
    twin = int(bits_to_hex(pdqhash.compute(crop)[0]), 16)
    distance = (int(by_variant["frame"], 16) ^ twin).bit_count()
    assert distance <= (0 if decode is DecodeMode.EXACT else 8)


def test_normalize_off_adds_no_variant():
    padded = ImageOps.expand(_picture(), border=24, fill=(0, 0, 0))
    result = hash_bytes(_png(padded), "x.png", HashOptions(signals=("pdq",)))
    assert [s.variant for s in result.signals] == [None]


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


def test_match_normalize_finds_padded_captioned_letterboxed_copies(cli, tmp_path, reference_dir):
    original = Image.open(reference_dir / "pdq" / "bridge-mods" / "aaa-orig.jpg").convert("RGB")
    original.thumbnail((640, 640))
    known = tmp_path / "known.png"
    original.save(known)
    assert cli("bank", "create", "known").returncode == 0
    added = cli("bank", "add", "known", str(known))
    assert added.returncode == 0, added.stderr
    w, h = original.size
    copies = tmp_path / "copies"
    copies.mkdir()
    ImageOps.expand(original, border=w // 10, fill=(255, 255, 255)).save(copies / "padded.jpg")
    box = Image.new("RGB", (w, h + h // 5), (0, 0, 0))
    box.paste(original, (0, h // 10))
    box.save(copies / "letterboxed.jpg")
    cap = Image.new("RGB", (w, h + h // 6), (255, 255, 255))
    cap.paste(original, (0, h // 6))
    ImageDraw.Draw(cap).text((20, h // 18), "look at this bridge " * 3, fill=(0, 0, 0))
    cap.save(copies / "captioned.jpg")
    _picture(w, h, seed=7).save(copies / "unrelated.jpg")

    plain = cli("match", "--no-normalize", "-f", "jsonl", str(copies))
    matched_plain = {r["item"] for r in map(_json, plain.stdout.splitlines())}
    edited = ("padded.jpg", "letterboxed.jpg", "captioned.jpg")
    assert not any(p.endswith(edited) for p in matched_plain)

    # on by default
    r = cli("match", "-f", "jsonl", str(copies))
    assert r.returncode == 0, r.stderr
    rows = {os.path.basename(row["item"]): row for row in map(_json, r.stdout.splitlines())}
    assert set(rows) == {"padded.jpg", "letterboxed.jpg", "captioned.jpg"}
    # the closest of the variants that cut the addition (a letterbox bar without text
    # is also a caption band)
    assert rows["padded.jpg"]["variant"].startswith("trim")
    assert is_normalized(rows["letterboxed.jpg"]["variant"])
    assert "uncaption" in rows["captioned.jpg"]["variant"]
    assert all(row["bank"] == "known" and row["distance"] <= 31 for row in rows.values())

    text = cli("match", str(copies / "padded.jpg"))
    assert "\tvariant=trim" in text.stdout

    # the bank's switch turns the normalised variants off for that bank only
    off = cli("bank", "set", "known", "--no-normalize")
    assert off.returncode == 0 and "normalize off" in off.stdout, off.stderr
    assert "normalize    no" in cli("bank", "show", "known").stdout
    r = cli("match", "-f", "jsonl", str(copies))
    assert r.stdout == "" and "no matches" in r.stderr
    assert cli("bank", "set", "known", "--normalize").returncode == 0
    r = cli("match", "-f", "jsonl", str(copies))
    assert {os.path.basename(row["item"]) for row in map(_json, r.stdout.splitlines())} == set(rows)


def _json(line: str):
    import json

    return json.loads(line)
