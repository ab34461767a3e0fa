"""Decoding resource limits: ``TIPLINE_MAX_IMAGE_PIXELS`` is the limit actually applied
(Pillow's own check must not fire first), and a per-worker budget of decoded pixels
bounds concurrent decodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_decode import encode, png_claiming, scene
from tipline.errors import BusyError, DecompressionBombError, MediaError
from tipline.signals.budget import PixelBudget
from tipline.signals.decode import DecodeMode, decode_pixels, open_image
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.signals.limits import MediaLimits

#: Pillow's default error threshold: twice Image.MAX_IMAGE_PIXELS (89,478,485).
PILLOW_ERROR_PIXELS = 2 * 89_478_485


def test_limit_below_pillows_default_is_tiplines() -> None:
    # 110M pixels: over our configured 100M, under Pillow's 179M
    with pytest.raises(DecompressionBombError, match="exceeds the limit of 100000000"):
        open_image(png_claiming(11_000, 10_000), max_pixels=100_000_000)


def test_limit_above_pillows_default_is_tiplines() -> None:
    # 210M pixels: over both Pillow's default and our default of 200M
    assert PILLOW_ERROR_PIXELS < 15_000 * 14_000
    result = hash_bytes(
        png_claiming(15_000, 14_000), "big.png", HashOptions(), limits=MediaLimits()
    )
    assert isinstance(result.error, DecompressionBombError)
    assert "exceeds the limit of 200000000" in result.error.message


def test_setting_above_pillows_default_allows_a_larger_image() -> None:
    # 182M pixels: over Pillow's default, under a configured 300M; the header opens
    # (the pixel data is a stub, so decoding it then fails as corrupt, not as a bomb)
    assert PILLOW_ERROR_PIXELS < 14_000 * 13_000
    im = open_image(png_claiming(14_000, 13_000), max_pixels=300_000_000)
    assert im.size == (14_000, 13_000)
    with pytest.raises(MediaError) as caught:
        decode_pixels(png_claiming(14_000, 13_000), mode=DecodeMode.EXACT, max_pixels=300_000_000)
    assert not isinstance(caught.value, DecompressionBombError)


# -- the decoded-pixel budget ---------------------------------------------------------------


def test_budget_admits_up_to_capacity_then_refuses() -> None:
    budget = PixelBudget(1_000, retry_after=7)
    with budget.reserve(600), budget.reserve(400):
        assert budget.in_use == 1_000
        with pytest.raises(BusyError) as caught, budget.reserve(1):
            pass
        assert caught.value.retry_after == 7 and caught.value.status == 503
    assert budget.in_use == 0
    # one image larger than the whole budget runs alone, never beside another
    with budget.reserve(5_000), pytest.raises(BusyError), budget.reserve(1):
        pass
    with budget.reserve(1), pytest.raises(BusyError), budget.reserve(5_000):
        pass
    assert budget.in_use == 0


def test_budget_is_released_when_the_decode_fails() -> None:
    budget = PixelBudget(10_000)
    with pytest.raises(MediaError):
        decode_pixels(png_claiming(90, 90), mode=DecodeMode.EXACT, max_pixels=10**9, budget=budget)
    assert budget.in_use == 0


def test_decode_needs_its_pixels_from_the_budget() -> None:
    budget = PixelBudget(150 * 100)
    data = encode(scene(150, 100), "PNG")
    with budget.reserve(1):  # another decode holds a pixel: 15,000 more do not fit
        with pytest.raises(BusyError):
            decode_pixels(data, mode=DecodeMode.EXACT, max_pixels=10**9, budget=budget)
        result = hash_bytes(data, "x.png", HashOptions(), limits=MediaLimits(), budget=budget)
        assert isinstance(result.error, BusyError)
    pixels = decode_pixels(data, mode=DecodeMode.EXACT, max_pixels=10**9, budget=budget)
    assert pixels.shape == (100, 150, 3) and budget.in_use == 0


def test_api_answers_503_with_retry_after_while_the_budget_is_held(tmp_path: Path) -> None:
    """In-process app: the worker's budget is held (as a running decode holds it); the
    next upload gets 503 + Retry-After, and succeeds once the budget is free."""
    import asyncio

    import httpx

    from tipline.api.app import create_app
    from tipline.api.media import decode_budget
    from tipline.config import Settings
    from tipline.services.auth import create_key
    from tipline.store.db import transaction

    settings = Settings(data_dir=tmp_path, decode_budget_pixels=150 * 100)
    app = create_app(settings)
    ctx = app.state.ctx
    with transaction(ctx.sessions) as session:
        key = create_key(session, name="h", role="hasher").secret
    data = encode(scene(150, 100), "PNG")
    budget = decode_budget(ctx)
    assert budget.capacity == 150 * 100

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tipline.test", headers=headers
        ) as client:
            with budget.reserve(1):  # a decode in flight holds one pixel
                busy = await client.post("/v1/hash", content=data)
                assert busy.status_code == 503, busy.text
                assert int(busy.headers["retry-after"]) >= 1
                assert busy.headers["content-type"].startswith("application/problem+json")
                assert "busy" in busy.json()["detail"]
                # digests decode nothing; a small picture fits beside the held pixel
                md5 = await client.post("/v1/hash?signals=md5", content=data)
                assert md5.status_code == 200
                small = encode(scene(20, 20), "PNG")
                assert (await client.post("/v1/hash", content=small)).status_code == 200
            ok = await client.post("/v1/hash", content=data)
            assert ok.status_code == 200, ok.text

    try:
        asyncio.run(run())
    finally:
        ctx.close()
    assert budget.in_use == 0
