"""The review UI in a real browser: Debian's Chromium driven by Playwright against a
real ``tipline serve``. A reviewer logs in, opens the queue, reveals and decides with
the keyboard only; the item leaves the queue and its report appears. The default
rendering is measurably blurred and grey (screenshot pixels against the picture); an
axe-core scan of every page finds no serious or critical violation. Screenshots of
each page go to docs/screenshots/ (missing ones, or all with
TIPLINE_UPDATE_SCREENSHOTS=1).

Every wait is one of Playwright's auto-waiting expectations (bounded, generous), never
a sleep or a timing assertion.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat

from _web_seed import PASSWORD
from _web_server import WebServer, web_server
from conftest import IN_CI, migrated_sqlite

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
#: generous upper bound of one expectation on a loaded machine (never a pass/fail clock)
WAIT_MS = 60_000

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium; tests skip without it, except in CI where it must exist."""
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        if IN_CI:
            pytest.fail(f"CI=true but {CHROMIUM} is missing (scripts/setup installs it)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    # under the two-person rule for unmatched items: the seeded items are matched (the
    # rule does not apply to them); test_two_person_rule_in_the_browser flags its own
    with web_server(
        tmp_path_factory.mktemp("browser"), count=3, REVIEW_TWO_PERSON_UNMATCHED="true"
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, web: WebServer) -> Iterator[Any]:
    context = browser.new_context(
        base_url=web.base_url, viewport={"width": 1280, "height": 900}, device_scale_factor=1
    )
    context.set_default_timeout(WAIT_MS)
    playwright_api.expect.set_options(timeout=WAIT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def _login_with_keyboard(page: Any, name: str) -> None:
    page.goto("/web/review")
    expect = playwright_api.expect
    expect(page).to_have_url(re.compile(r".*/web/login\?.*"))
    expect(page.locator("#name")).to_be_focused()
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Review queue")


def _shot(page: Any, name: str) -> None:
    """Screenshot the page. It goes to docs/screenshots/ when that file is missing or
    TIPLINE_UPDATE_SCREENSHOTS=1 (ids and times differ on every run: rewriting the
    committed pictures each time would only churn the repository)."""
    data = page.screenshot(full_page=True)
    assert data.startswith(b"\x89PNG")
    target = SCREENSHOTS / name
    if not target.exists() or os.environ.get("TIPLINE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _image_of(page: Any) -> Image.Image:
    return Image.open(io.BytesIO(page.locator("#media-img").screenshot())).convert("RGB")


def _edges(im: Image.Image) -> float:
    return float(ImageStat.Stat(im.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0])


def _colour(im: Image.Image) -> float:
    """Mean distance of each pixel from its own grey (0 for a grayscale picture)."""
    grey = im.convert("L").convert("RGB")
    return float(sum(ImageStat.Stat(ImageChops.difference(im, grey)).mean) / 3)


def _difference(a: Image.Image, b: Image.Image) -> float:
    return float(sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3)


def _wait_level(page: Any, level: int) -> None:
    expect = playwright_api.expect
    expect(page.locator("#media-img")).to_have_attribute("data-level", str(level))
    expect(page.locator("html")).to_have_attribute("data-keys", "on")
    # the picture itself has arrived (decoded, non-zero size)
    page.wait_for_function(
        "() => { const i = document.getElementById('media-img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )


def test_review_with_the_keyboard_only(page: Any, web: WebServer) -> None:
    expect = playwright_api.expect
    _login_with_keyboard(page, "alice")
    _shot(page, "queue.png")
    expect(page.locator("html")).to_have_attribute("data-keys", "on")
    top = page.locator("a.item-link[data-free]").first.inner_text()
    page.keyboard.press("n")
    expect(page.locator("h1")).to_contain_text(top)
    _wait_level(page, 0)
    _shot(page, "item-blurred.png")

    # the default rendering, as the screen shows it, against the picture itself
    shown = _image_of(page)
    n = web.seeded.items.index(top)
    original = Image.open(io.BytesIO(web.seeded.pictures[n])).convert("RGB").resize(shown.size)
    assert _colour(shown) < 3, "the default rendering must be grayscale"
    assert _colour(original) > 5
    assert _edges(shown) < _edges(original) / 4, "the default rendering must be blurred"
    assert _difference(shown, original) > 40

    for level in (1, 2, 3):
        page.keyboard.press("r")
        _wait_level(page, level)
    revealed = _image_of(page)
    # fully revealed it is the picture again (up to JPEG and scaling)
    assert _difference(revealed, original) < _difference(shown, original) / 3
    assert _edges(revealed) > _edges(shown) * 4
    _shot(page, "item-revealed.png")

    page.keyboard.press("c")  # no classification yet: the form asks for one, nothing sent
    expect(page.locator("#cls-A1")).to_be_focused()
    page.keyboard.press("2")
    expect(page.locator("#cls-A2")).to_be_checked()
    page.keyboard.press("c")
    done = page.locator("#done")
    expect(done).to_contain_text("Confirmed")
    expect(done).to_contain_text("queued for delivery")
    report_id = done.locator("a").inner_text()
    expect(page.locator(f'a.item-link:text-is("{top}")')).to_have_count(0)
    _shot(page, "queue-after-decision.png")

    page.goto("/web/reports")
    expect(page.locator(f"#r-{report_id}")).to_be_visible()
    _shot(page, "reports.png")


def test_second_reviewer_sees_the_lease_and_a_clear_conflict(
    browser: Any, page: Any, web: WebServer
) -> None:
    expect = playwright_api.expect
    _login_with_keyboard(page, "alice")
    item_id = web.seeded.items[2]
    page.goto(f"/web/review/{item_id}")
    expect(page.locator("#lease-mine")).to_be_visible()
    other = browser.new_context(base_url=web.base_url)
    other.set_default_timeout(WAIT_MS)
    try:
        bob = other.new_page()
        _login_with_keyboard(bob, "bob")
        bob.goto(f"/web/review/{item_id}")
        expect(bob.locator("#lease-taken")).to_contain_text("user:alice is working on this item")
        _shot(bob, "item-taken.png")
        expect(bob.locator("html")).to_have_attribute("data-keys", "on")
        bob.keyboard.press("s")  # skip: nothing to release, back to the queue
        expect(bob.locator("h1")).to_have_text("Review queue")
        bob.goto(f"/web/review/{item_id}")
        expect(bob.locator("html")).to_have_attribute("data-keys", "on")
        bob.keyboard.press("3")
        bob.keyboard.press("c")
        expect(bob.locator("h1")).to_have_text("Conflict")
        expect(bob.locator("[role=alert]")).to_contain_text("user:alice is working on this item")
    finally:
        other.close()


def test_no_serious_accessibility_violations(page: Any, web: WebServer) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    found: dict[str, list[str]] = {}

    def scan(name: str) -> None:
        results = axe.run(page)
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']}"
            for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        if bad:
            found[name] = bad

    page.goto("/web/login")
    playwright_api.expect(page.locator("#name")).to_be_visible()
    scan("login")
    _shot(page, "login.png")
    _login_with_keyboard(page, "alice")
    scan("queue")
    page.goto(f"/web/review/{web.seeded.items[0]}")
    _wait_level(page, 0)
    scan("item")
    page.goto("/web/reports")
    scan("reports")
    xml_links = page.locator("td.actions a")
    if xml_links.count():  # the keyboard test above made a report
        xml_links.first.click()
        playwright_api.expect(page.locator("pre.xml")).to_be_visible()
        scan("report xml")
    page.goto("/web/preferences")
    scan("preferences")
    page.goto("/web/review/NOSUCHITEM")
    scan("error")
    assert not found, found


def test_desk_pages_have_no_serious_accessibility_violations(browser: Any, tmp_path: Path) -> None:
    """The clearinghouse analyst's desk (a server of both roles, reports filed through
    the intake): dashboard, queue, a report and a cluster page, reached by keyboard login."""
    from axe_playwright_python.sync_playwright import Axe

    from test_web_desk import PASSWORD as DESK_PASSWORD
    from test_web_desk import desk_server

    expect = playwright_api.expect
    found: dict[str, list[str]] = {}
    with desk_server(migrated_sqlite(tmp_path / "desk.db"), tmp_path / "ch") as (srv, ids):
        context = browser.new_context(
            base_url=srv.url.removesuffix("/ispws"),
            viewport={"width": 1280, "height": 900},
            device_scale_factor=1,
        )
        context.set_default_timeout(WAIT_MS)
        try:
            page = context.new_page()
            page.goto("/web/desk")
            expect(page.locator("#name")).to_be_focused()
            page.keyboard.type("ana")
            page.keyboard.press("Tab")
            page.keyboard.type(DESK_PASSWORD)
            page.keyboard.press("Enter")
            expect(page.locator("h1")).to_have_text("Analyst desk")
            axe = Axe()
            for name, path, heading in (
                ("desk", "/web/desk", "Analyst desk"),
                ("desk queue", "/web/desk/queue", "Triage queue"),
                ("desk report", f"/web/desk/reports/{ids[1]}", f"Received report {ids[1]}"),
                ("desk cluster", "/web/desk/clusters/1", "Cluster 1"),
            ):
                page.goto(path)
                expect(page.locator("h1")).to_have_text(heading)
                bad = [
                    f"{v['id']} ({v['impact']}): {v['help']}"
                    for v in axe.run(page).response["violations"]
                    if v.get("impact") in ("serious", "critical")
                ]
                if bad:
                    found[name] = bad
                _shot(page, name.replace(" ", "-") + ".png")
        finally:
            context.close()
    assert not found, found


def _tab_to(page: Any, selector: str, *, presses: int = 300) -> None:
    """Press Tab until the element ``selector`` has the focus (fails when it is never
    reached: the control is not keyboard-reachable)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reachable with Tab")


def _thumb_of(page: Any, file_id: str, level: int) -> Image.Image:
    thumb = page.locator(f"#t-{file_id} img")
    playwright_api.expect(thumb).to_have_attribute("data-level", str(level))
    page.wait_for_function(
        "id => { const i = document.querySelector('#t-' + id + ' img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        arg=file_id,
    )
    return Image.open(io.BytesIO(thumb.screenshot())).convert("RGB")


def test_analyst_desk_with_the_keyboard_only(browser: Any, tmp_path: Path) -> None:
    """A server of the clearinghouse role alone: an analyst logs in with the keyboard and
    lands on the desk; on a report the files are blurred grey thumbnails; reveal, route
    and confirm are reached with Tab and used with Enter and Space; axe-core finds no
    serious or critical violation on the report page with its forms and preview."""
    from axe_playwright_python.sync_playwright import Axe

    from test_web_desk_actions import PASSWORD as DESK_PASSWORD
    from test_web_desk_actions import clearinghouse_desk

    expect = playwright_api.expect
    with clearinghouse_desk(migrated_sqlite(tmp_path / "desk.db"), tmp_path) as (srv, (r1, _)):
        context = browser.new_context(
            base_url=srv.url.removesuffix("/ispws"),
            viewport={"width": 1280, "height": 900},
            device_scale_factor=1,
        )
        context.set_default_timeout(WAIT_MS)
        try:
            page = context.new_page()
            page.goto("/web")
            expect(page.locator("#name")).to_be_focused()
            page.keyboard.type("ana")
            page.keyboard.press("Tab")
            page.keyboard.type(DESK_PASSWORD)
            page.keyboard.press("Enter")
            expect(page.locator("h1")).to_have_text("Analyst desk")  # the analyst's landing

            page.goto(f"/web/desk/reports/{r1}")
            expect(page.locator("h1")).to_have_text(f"Received report {r1}")
            expect(page.locator("html")).to_have_attribute("data-keys", "on")
            for key in ("1", "c", "r", "s"):  # the review page's single keys do nothing here
                page.keyboard.press(key)
            expect(page.locator("#desk-confirm-form")).to_be_visible()
            expect(page.locator("#done")).to_have_count(0)
            file_id = page.locator("li.thumb").first.get_attribute("id").removeprefix("t-")
            blurred = _thumb_of(page, file_id, 0)
            assert _colour(blurred) < 3, "a desk thumbnail opens grayscale"
            _shot(page, "desk-report-blurred.png")

            for level in (1, 2, 3):
                _tab_to(page, f"#t-{file_id} button")
                page.keyboard.press("Enter")
                expect(page.locator(f"#t-{file_id} img")).to_have_attribute(
                    "data-level", str(level)
                )
            revealed = _thumb_of(page, file_id, 3)
            assert _colour(revealed) > 5, "level 3 is the picture in colour"
            assert _edges(blurred) < _edges(revealed) / 4, "the thumbnail opens blurred"
            expect(page.locator("#exposure")).to_contain_text("Unblurred today: 1 of 1")

            _tab_to(page, "#route-form button")
            page.keyboard.press("Enter")
            expect(page.locator("#agency")).to_contain_text("California ICAC Task Force")
            expect(page.locator("#package-members")).to_contain_text(f"media/{file_id}.jpg")

            bad = [
                f"{v['id']} ({v['impact']}): {v['help']}"
                for v in Axe().run(page).response["violations"]
                if v.get("impact") in ("serious", "critical")
            ]
            assert not bad, bad
            _shot(page, "desk-report-routed.png")

            # a radio group is one Tab stop (on "none"); an arrow key moves to A1
            _tab_to(page, "#desk-confirm-form input[name=classification]")
            page.keyboard.press("ArrowRight")
            expect(page.locator("#desk-cls-A1")).to_be_checked()
            _tab_to(page, "#desk-confirm-form button[type=submit]")
            page.keyboard.press("Enter")
            expect(page.locator("#done")).to_contain_text("Confirmed")
            expect(page.locator("#decided")).to_contain_text("Confirmed by user:ana")
        finally:
            context.close()


def test_two_person_rule_in_the_browser(browser: Any, web: WebServer) -> None:
    """Under the two-person rule: carol confirms a flagged item with the keyboard and the
    queue says it waits; dave sees who confirmed first and decides it with the keyboard;
    axe-core finds no serious or critical violation on the waiting item's pages. (On the
    module's server, in a tenant of its own: the other tests' queues never show it.)"""
    from axe_playwright_python.sync_playwright import Axe

    from tipline.services import submissions, web_auth
    from tipline.services.auth import Principal, Role
    from tipline.services.review import flag

    expect = playwright_api.expect
    tenant = "two-person"
    for name in ("carol", "dave"):
        web_auth.add_user(web.db.sessions, name, PASSWORD, role=Role.REVIEWER, tenant=tenant)
    platform = Principal("platform", Role.MATCHER, tenant)
    made = submissions.create_submission(
        web.db.sessions,
        platform,
        submissions.SubmissionFacts(content_id="reported-by-a-user"),
        [{"type": "pdq", "value": "f" * 64}],
    )
    item_id = flag.flag_submission(web.db.sessions, platform, made.id, note="user report")
    found: dict[str, list[str]] = {}

    def scan(page: Any, name: str) -> None:
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']}"
            for v in Axe().run(page).response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        if bad:
            found[name] = bad

    contexts = []
    try:
        pages = []
        for _ in range(2):
            context = browser.new_context(
                base_url=web.base_url, viewport={"width": 1280, "height": 900}
            )
            context.set_default_timeout(WAIT_MS)
            contexts.append(context)
            pages.append(context.new_page())
        carol, dave = pages
        _login_with_keyboard(carol, "carol")
        carol.goto(f"/web/review/{item_id}")
        expect(carol.locator("html")).to_have_attribute("data-keys", "on")
        carol.keyboard.press("1")
        carol.keyboard.press("c")
        expect(carol.locator("#done")).to_contain_text("a different reviewer must confirm")
        expect(carol.locator("table.queue")).to_contain_text(
            "confirmed once by user:carol, needs a second reviewer"
        )
        scan(carol, "queue waiting")
        carol.goto(f"/web/review/{item_id}")
        expect(carol.locator("#confirm-waiting")).to_be_visible()
        scan(carol, "item waiting, first reviewer")

        _login_with_keyboard(dave, "dave")
        dave.goto(f"/web/review/{item_id}")
        expect(dave.locator("#first-confirmation")).to_contain_text(
            "user:carol confirmed this item first (A1"
        )
        scan(dave, "item waiting, second reviewer")
        _shot(dave, "item-second-reviewer.png")
        expect(dave.locator("html")).to_have_attribute("data-keys", "on")
        dave.keyboard.press("1")
        dave.keyboard.press("c")
        expect(dave.locator("#done")).to_contain_text("Confirmed")
        expect(dave.locator(f'a.item-link:text-is("{item_id}")')).to_have_count(0)
    finally:
        for context in contexts:
            context.close()
    assert not found, found
