"""The web UI over HTTP against a real ``tipline serve``: login and sessions, CSRF,
the prioritised queue, leases and conflicts, signed media, reveals, decisions and the
report they feed, tenant isolation; every refusal audited."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat
from sqlalchemy import text

from _cli import run_tipline
from _clock import HANG_SECONDS
from _web_seed import PASSWORD, add_matched_picture, seed, seed_video, settings_for, video
from _web_server import WebServer, hidden, web_server
from conftest import migrated_sqlite
from tipline.errors import AuthError, ConflictError, InputError, MediaError, PermissionDeniedError
from tipline.services import actions, banks, submissions, web_auth
from tipline.services.auth import Principal, Role
from tipline.services.database import Database, in_transaction, open_database
from tipline.services.review import decisions, item, media
from tipline.services.review.queue import QueueStatus, claim, list_queue
from tipline.services.vault import Vault
from tipline.signals.limits import MediaLimits
from tipline.store.base import utcnow


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with web_server(tmp_path_factory.mktemp("web"), count=6) as srv:
        yield srv


def _audited(srv: WebServer, action: str) -> list[tuple[str, str | None, str]]:
    """(actor, target id, details JSON) of every audit record with ``action``."""
    with srv.db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT actor, target_id, details FROM audit_log WHERE action = :a ORDER BY seq"),
            {"a": action},
        ).all()
    return [(str(r[0]), r[1], str(r[2])) for r in rows]


def _image_url(html: str) -> str:
    found = re.search(r'id="media-img" src="([^"]+)"', html)
    assert found is not None, "no media image on the page"
    return found.group(1).replace("&amp;", "&")


# -- login, sessions, CSRF ------------------------------------------------------------------


def test_login_sets_strict_http_only_cookie_and_failures_are_audited(web: WebServer) -> None:
    client = web.client()
    assert client.get("/web/review").status_code == 303  # to the login page
    page = client.get("/web/login")
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    token = hidden(page.text, "login_token")
    wrong = client.post(
        "/web/login",
        data={"login_token": token, "name": "alice", "password": "not the password"},
    )
    assert wrong.status_code == 401
    assert "wrong user name or password" in wrong.text
    assert any(
        t == "alice" and "wrong password" in d for _, t, d in _audited(web, "web.login_failed")
    )
    token = hidden(wrong.text, "login_token")
    ok = client.post(
        "/web/login", data={"login_token": token, "name": "alice", "password": PASSWORD}
    )
    assert ok.status_code == 303
    cookie = next(v for k, v in ok.headers.multi_items() if k == "set-cookie" and "session" in v)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/web" in cookie
    assert "Secure" not in cookie  # TIPLINE_WEB_COOKIE_SECURE=false for plain-HTTP tests
    assert client.get("/web/review").status_code == 200
    client.close()


def test_login_form_without_its_token_is_refused_and_audited(web: WebServer) -> None:
    with web.client() as client:
        answer = client.post("/web/login", data={"name": "alice", "password": PASSWORD})
    assert answer.status_code == 403
    assert any("login without" in d for _, _, d in _audited(web, "web.refused"))


def test_a_form_without_csrf_token_is_refused_and_audited(web: WebServer) -> None:
    client = web.login("bob")
    before = len(_audited(web, "web.refused"))
    item_id = web.seeded.items[5]
    answer = client.post(f"/web/review/{item_id}/reveal", data={"level": "3"})
    assert answer.status_code == 403
    answer = client.post(f"/web/review/{item_id}/reveal", data={"level": "3", "csrf": "x" * 64})
    assert answer.status_code == 403
    refusals = _audited(web, "web.refused")[before:]
    assert len(refusals) == 2 and all("CSRF" in d for _, _, d in refusals)
    assert all(a == "user:bob" for a, _, _ in refusals)
    # nothing was revealed
    with web.db.sessions() as session:
        assert media.revealed_level(session, _principal(web, "bob"), item_id) == -1
    client.close()


def test_logout_ends_the_session_server_side(web: WebServer) -> None:
    client = web.login("bob")
    page = client.get("/web/review")
    cookie = client.cookies.get("tipline_session")
    assert cookie
    out = client.post("/web/logout", data={"csrf": hidden(page.text, "csrf")})
    assert out.status_code == 303 and out.headers["clear-site-data"] == '"cache"'
    # the old cookie, replayed, no longer opens anything
    with web.client() as replay:
        replay.cookies.set("tipline_session", cookie, domain="127.0.0.1", path="/web")
        assert replay.get("/web/review").status_code == 303
    client.close()


def _principal(srv: WebServer, name: str) -> Principal:
    return _user(srv.db, name)


def test_sessions_expire_when_idle_or_old_and_the_expiry_is_audited(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, migrated_sqlite(tmp_path / "tipline.db"))
    db = open_database(settings=settings)
    try:
        web_auth.add_user(db.sessions, "carol", PASSWORD)
        policy = web_auth.SessionPolicy(idle=timedelta(minutes=30), max_age=timedelta(hours=2))
        t0 = utcnow()
        token, _ = web_auth.login(db.sessions, "carol", PASSWORD, policy=policy, now=t0)
        # used every 20 minutes: alive until the absolute limit
        for minutes in (20, 40, 60, 80, 100):
            web_auth.resume(db.sessions, token, policy=policy, now=t0 + timedelta(minutes=minutes))
        with pytest.raises(web_auth.SessionExpiredError):
            web_auth.resume(db.sessions, token, policy=policy, now=t0 + timedelta(minutes=121))
        token, _ = web_auth.login(db.sessions, "carol", PASSWORD, policy=policy, now=t0)
        with pytest.raises(web_auth.SessionExpiredError):
            web_auth.resume(db.sessions, token, policy=policy, now=t0 + timedelta(minutes=31))
        # an ended session stays ended
        with pytest.raises(web_auth.SessionExpiredError):
            web_auth.resume(db.sessions, token, policy=policy, now=t0 + timedelta(minutes=1))
        with db.engine.connect() as conn:
            reasons = conn.execute(
                text("SELECT details FROM audit_log WHERE action = 'web.session_expired'")
            ).scalars()
            found = " ".join(str(r) for r in reasons)
        assert "session too old" in found and "idle too long" in found
        # five failures of a name lock it for 15 minutes, right password or not (the
        # failures are counted from their audit records, stamped with the real time)
        web_auth.add_user(db.sessions, "dave", PASSWORD)
        for _ in range(5):
            with pytest.raises(AuthError, match="wrong user name or password"):
                web_auth.login(db.sessions, "dave", "guess", policy=policy)
        with pytest.raises(AuthError, match="too many failed logins"):
            web_auth.login(db.sessions, "dave", PASSWORD, policy=policy)
        # an unknown name locks the same way (nothing tells existing names apart)
        for _ in range(5):
            with pytest.raises(AuthError, match="wrong user name or password"):
                web_auth.login(db.sessions, "nobody", "guess", policy=policy)
        with pytest.raises(AuthError, match="too many failed logins"):
            web_auth.login(db.sessions, "nobody", "guess", policy=policy)
        later = utcnow() + timedelta(days=1)
        web_auth.login(db.sessions, "dave", PASSWORD, policy=policy, now=later)
        # a disabled user's session ends at once; a new password ends every session
        token, _ = web_auth.login(db.sessions, "carol", PASSWORD, policy=policy)
        web_auth.set_password(db.sessions, "carol", "another long password")
        with pytest.raises(web_auth.SessionExpiredError):
            web_auth.resume(db.sessions, token, policy=policy)
        web_auth.disable_user(db.sessions, "carol")
        with pytest.raises(AuthError):
            web_auth.login(db.sessions, "carol", "another long password", policy=policy)
    finally:
        db.close()


def test_user_commands(tmp_path: Path) -> None:
    env = {**os.environ, "TIPLINE_DATA_DIR": str(tmp_path)}
    env.pop("TIPLINE_DATABASE_URL", None)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        if args[0] == "add" and "dana" in args:  # one run as the real console script
            return subprocess.run(
                [sys.executable, "-m", "tipline.cli.main", "user", *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=HANG_SECONDS,
                check=False,
            )
        return run_tipline(["user", *args], env=env, cwd=tmp_path, stdin=stdin)

    added = run("add", "dana", "--tenant", "acme", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    # the console script hashes with argon2-cffi's default cost (the test process uses
    # the cheapest: conftest's _cheap_web_password_hashes)
    with closing(sqlite3.connect(tmp_path / "tipline.db")) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM web_users").fetchone()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), stored
    short = run("add", "erin", "--password-stdin", stdin="short\n")
    assert short.returncode == 2
    assert short.stderr.strip() == "error: a password needs 12 to 1024 characters"
    listed = run("list", "--json")
    assert '"name": "dana"' in listed.stdout and '"tenant": "acme"' in listed.stdout
    assert '"role": "reviewer"' in listed.stdout
    changed = run("passwd", "dana", "--password-stdin", stdin="a new long password\n")
    assert changed.returncode == 0, changed.stderr
    assert run("disable", "dana").returncode == 0
    missing = run("disable", "nobody")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no web user 'nobody'"
    settings = settings_for(tmp_path)
    db = open_database(settings=settings)
    try:
        policy = web_auth.SessionPolicy.from_settings(settings)
        with pytest.raises(AuthError):
            web_auth.login(db.sessions, "dana", "a new long password", policy=policy)
    finally:
        db.close()
    stored = (tmp_path / "tipline.db").read_bytes()
    assert PASSWORD.encode() not in stored and b"a new long password" not in stored


# -- queue, leases, conflicts -----------------------------------------------------------------


def test_queue_is_ordered_by_priority_and_filters(web: WebServer) -> None:
    client = web.login("alice")
    page = client.get("/web/review")
    listed = re.findall(r'class="item-link" href="/web/review/([0-9A-Z]+)"', page.text)
    pending = [i for i in web.seeded.items if i in listed]
    # items 1, 3, 5 matched an entry labelled A2: they come first, each group oldest first
    labelled = [web.seeded.items[n] for n in (1, 3, 5) if web.seeded.items[n] in pending]
    unlabelled = [web.seeded.items[n] for n in (0, 2, 4) if web.seeded.items[n] in pending]
    assert listed == labelled + unlabelled
    assert client.get("/web/review", params={"bank": "nothing"}).text.count("item-link") == 0
    assert client.get("/web/review", params={"status": "bogus"}).status_code == 400
    client.close()


def test_queue_priority_bank_severity_and_escalation_first(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, migrated_sqlite(tmp_path / "tipline.db"))
    db = open_database(settings=settings)
    try:
        seeded = seed(db, settings, count=3)
        alice = _user(db, "alice")
        order = [e.id for e in list_queue(db.sessions, alice)]
        assert order == [seeded.items[1], seeded.items[0], seeded.items[2]]
        banks.create_bank(db, "urgent", tenant="acme")
        # escalation outranks classification and age
        claim(db.sessions, alice, seeded.items[2], lease_seconds=60)
        decisions.escalate(db, alice, seeded.items[2], note="needs a second look")
        order = [e.id for e in list_queue(db.sessions, alice)]
        assert order[0] == seeded.items[2]
        escalated = list_queue(db.sessions, alice, status=QueueStatus.ESCALATED)
        assert [e.id for e in escalated] == [seeded.items[2]]
        # severity of the bank outranks classification: all in one bank here, so a
        # severity for "known" keeps the order, one for another bank changes nothing
        same = [e.id for e in list_queue(db.sessions, alice, severity={"urgent": 9})]
        assert same == order
    finally:
        db.close()


def _user(db: Database, name: str) -> Principal:
    return _info(db, name).principal


def test_two_reviewers_never_work_one_item_unknowingly(web: WebServer) -> None:
    alice = web.login("alice")
    bob = web.login("bob")
    item_id = web.seeded.items[4]
    mine = alice.get(f"/web/review/{item_id}")
    assert 'id="lease-mine"' in mine.text
    theirs = bob.get(f"/web/review/{item_id}")
    assert 'id="lease-taken"' in theirs.text and "user:alice is working on this item" in theirs.text
    listed = bob.get("/web/review").text
    assert re.search(rf"{item_id}</a></td>.*?user:alice until", listed, re.S)
    refused = bob.post(
        f"/web/review/{item_id}/decide",
        data={"csrf": hidden(theirs.text, "csrf"), "verdict": "confirm", "classification": "B1"},
    )
    assert refused.status_code == 409 and "user:alice is working on this item" in refused.text
    # alice gives it back: bob can take it; then alice reopens it after bob released it
    assert 'id="release-form"' in mine.text and 'id="release-form"' not in theirs.text
    released = alice.post(
        f"/web/review/{item_id}/release", data={"csrf": hidden(mine.text, "csrf")}
    )
    assert released.status_code == 303
    assert 'id="lease-mine"' in bob.get(f"/web/review/{item_id}").text
    bob.post(f"/web/review/{item_id}/release", data={"csrf": hidden(theirs.text, "csrf")})
    mine = alice.get(f"/web/review/{item_id}")
    assert 'id="lease-mine"' in mine.text
    done = alice.post(
        f"/web/review/{item_id}/decide",
        data={"csrf": hidden(mine.text, "csrf"), "verdict": "false_positive", "reason": "a logo"},
    )
    assert done.status_code == 303
    late = bob.post(
        f"/web/review/{item_id}/decide",
        data={"csrf": hidden(theirs.text, "csrf"), "verdict": "confirm", "classification": "B1"},
    )
    assert late.status_code == 409
    assert "already rejected by user:alice" in late.text
    # the false positive went to the tenant's allow bank with its reason
    entry = banks.get_entry(web.db, "allow-acme", f"review-{item_id}")
    assert entry.source is not None and "a logo" in entry.source
    assert banks.show_bank(web.db, "allow-acme").bank.is_allow_bank
    alice.close()
    bob.close()


def test_first_decision_wins_when_two_reviewers_decide_at_once(db_url: str, tmp_path: Path) -> None:
    import threading

    settings = settings_for(tmp_path, db_url)
    db = open_database(db_url, settings=settings)
    try:
        seeded = seed(db, settings, count=1)
        item_id = seeded.items[0]
        who = [_user(db, "alice"), _user(db, "bob")]
        barrier = threading.Barrier(2)
        results: list[object] = [None, None]

        def run(n: int) -> None:
            barrier.wait()
            try:
                results[n] = decisions.escalate(db, who[n], item_id, note=f"note {n}")
                results[n] = decisions.false_positive(db, who[n], item_id, reason=f"r{n}")
            except ConflictError as exc:
                results[n] = exc

        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [r for r in results if isinstance(r, decisions.Outcome)]
        lost = [r for r in results if isinstance(r, ConflictError)]
        assert len(won) == 1 and len(lost) == 1
        decided = _audited_db(db, "review.decide")
        assert len(decided) == 1
    finally:
        db.close()


def _audited_db(db: Database, action: str) -> list[str]:
    with db.engine.connect() as conn:
        return [
            str(r)
            for r in conn.execute(
                text("SELECT target_id FROM audit_log WHERE action = :a"), {"a": action}
            ).scalars()
        ]


# -- media, reveals, decisions --------------------------------------------------------------


def _submission_of(srv: WebServer, item_id: str) -> str:
    admin = Principal("admin", Role.ADMIN)
    for status in actions.ReviewStatus:
        for found in in_transaction(
            srv.db.sessions, actions.review_queue, actor=admin, status=status, limit=1000
        ):
            if found["id"] == item_id:
                return str(found["event_id"])
    raise AssertionError(f"no review item {item_id}")


def _jpeg(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_media_is_signed_blurred_by_default_and_revealed_only_on_request(web: WebServer) -> None:
    client = web.login("alice")
    item_id = web.seeded.items[3]
    page = client.get(f"/web/review/{item_id}")
    url = _image_url(page.text)
    blurred = client.get(url)
    assert blurred.status_code == 200 and blurred.headers["cache-control"] == "no-store"
    # the same picture, sharp and in colour, as the server would render level 3
    sharp = _jpeg(media.render_image(web.seeded.pictures[3], 3, max_pixels=10**8))
    shown = _jpeg(blurred.content)
    assert shown.size == sharp.size
    # grayscale: no colour at all; blurred: the checkerboard's edges are gone
    assert (
        max(
            ImageStat.Stat(ImageChops.difference(shown, shown.convert("L").convert("RGB"))).extrema[
                0
            ]
        )
        <= 2
    )
    assert _edge_energy(shown) < _edge_energy(sharp) / 4
    # a tampered or cross-level URL is refused and audited
    before = len(_audited(web, "web.refused"))
    assert client.get(url.replace("/0.jpg", "/3.jpg")).status_code == 403
    assert (
        client.get(url[:-4] + ("0000" if not url.endswith("0000") else "1111")).status_code == 403
    )
    assert client.get(re.sub(r"exp=\d+", "exp=1", url)).status_code == 403
    assert len(_audited(web, "web.refused")) == before + 3
    # another session cannot use the URL
    bob = web.login("bob")
    assert bob.get(url).status_code == 403
    bob.close()
    # reveal to level 3 (colour): recorded, audited, then renderable
    csrf = hidden(page.text, "csrf")
    for level in (1, 2, 3):
        answer = client.post(f"/web/review/{item_id}/reveal", data={"csrf": csrf, "level": level})
        assert answer.status_code == 303
    page = client.get(f"/web/review/{item_id}")
    url = _image_url(page.text)
    assert "/3.jpg" in url
    colour = _jpeg(client.get(url).content)
    assert _edge_energy(colour) > _edge_energy(shown) * 4
    assert ("user:alice", item_id) in [(a, t) for a, t, _ in _audited(web, "review.reveal")]
    assert any('"level":3' in d for _, _, d in _audited(web, "vault.read"))
    client.close()


def _edge_energy(im: Image.Image) -> float:
    return float(ImageStat.Stat(im.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0])


def test_confirm_reports_what_the_reviewer_revealed(web: WebServer) -> None:
    client = web.login("alice")
    viewed_item, unviewed_item = web.seeded.items[0], web.seeded.items[1]
    page = client.get(f"/web/review/{viewed_item}")
    csrf = hidden(page.text, "csrf")
    client.post(f"/web/review/{viewed_item}/reveal", data={"csrf": csrf, "level": 2})
    done = client.post(
        f"/web/review/{viewed_item}/decide",
        data={
            "csrf": csrf,
            "verdict": "confirm",
            "classification": "A2",
            "annotation": ["viral", "generativeAi"],
        },
    )
    assert done.status_code == 303
    report_id = re.search(r"report=([0-9A-Z]+)", done.headers["location"])
    assert report_id is not None
    client.get(f"/web/review/{unviewed_item}")
    done = client.post(
        f"/web/review/{unviewed_item}/decide",
        data={"csrf": csrf, "verdict": "confirm", "classification": "B2"},
    )
    other_report = re.search(r"report=([0-9A-Z]+)", done.headers["location"])
    assert other_report is not None
    from tipline.services.reports import service as reports

    who = _principal(web, "alice")
    viewed = reports.get_report(web.db.sessions, who, report_id.group(1))
    unviewed = reports.get_report(web.db.sessions, who, other_report.group(1))
    assert [f["viewed_by_esp"] for f in viewed.files] == [True]
    assert [f["viewed_by_esp"] for f in unviewed.files] == [False]
    decision = viewed.summary.source.removeprefix("decision:")
    facts = submissions.list_decisions(web.db.sessions, who, _submission_of(web, viewed_item))[
        0
    ].facts
    assert decision and facts["classification"] == "A2" and facts["viewed"] is True
    assert facts["file_annotations"] == ["generativeAi", "viral"]
    # both left the queue; the reports page lists them
    queue = client.get("/web/review").text
    assert viewed_item not in queue.split('id="done"')[-1].split("</p>", 1)[-1]
    assert unviewed_item not in queue.split("</p>", 1)[-1]
    listed = client.get("/web/reports")
    assert report_id.group(1) in listed.text and other_report.group(1) in listed.text
    xml = client.get(f"/web/reports/{report_id.group(1)}/xml")
    assert xml.status_code == 200 and "&lt;report&gt;" in xml.text
    assert xml.headers["cache-control"] == "no-store"
    # not yet delivered (no receiver configured): it can be retracted
    retracted = client.post(
        f"/web/reports/{other_report.group(1)}/retract",
        data={"csrf": hidden(listed.text, "csrf")},
    )
    assert retracted.status_code == 303
    assert reports.get_report(web.db.sessions, who, other_report.group(1)).summary.status == (
        "retracted"
    )
    assert "Retraction queued" in client.get(retracted.headers["location"]).text
    client.close()


def test_a_held_viral_bundle_is_listed_as_held_without_its_unfinished_xml(
    web: WebServer,
) -> None:
    """A match-time viral bundle still collecting uploads has no final document: the
    reports page says so (uploads and accounts so far) and offers no XML, and the XML
    page refuses it with the reason (409)."""
    from tipline.services.matching.match import Match
    from tipline.services.reports import service as reports
    from tipline.services.reports.auto import AutoReportPolicy
    from tipline.signals.base import Signal

    policy = AutoReportPolicy.from_settings(
        web.settings.model_copy(update={"report_auto_banks": ["trusted"]})
    )
    uploader = Principal("acmeheld0001", Role.MATCHER, "acme")
    for n in (1, 2):
        submissions.match_and_record(
            web.db.sessions,
            uploader,
            [Signal(type="md5", value=f"{900 + n:032x}"), Signal(type="pdq", value="e" * 64)],
            lambda _session: [Match(bank="trusted", entry_id="t1", signal_type="md5", distance=0)],
            submission=submissions.SubmissionFacts(
                f"held-{n}", uploader_account=f"held-user-{n}", upload_ip="198.51.100.7"
            ),
            media=f"benign held placeholder {n}".encode(),
            vault=Vault.from_settings(web.settings),
            auto_report=policy,
        )
    (held,) = [
        s
        for s in reports.list_reports(web.db.sessions, _principal(web, "alice"))
        if s.step == "held"
    ]
    client = web.login("alice")
    row = client.get("/web/reports").text.split(f'id="r-{held.id}"', 1)[1].split("</tr>", 1)[0]
    assert "2 uploads by 2 accounts so far, final document built at release" in row
    assert "/xml" not in row
    refused = client.get(f"/web/reports/{held.id}/xml")
    assert refused.status_code == 409 and "held until" in refused.text
    client.close()


def test_another_tenants_item_is_not_found_and_audited(web: WebServer) -> None:
    client = web.login("eve")
    item_id = web.seeded.items[2]
    answer = client.get(f"/web/review/{item_id}")
    assert answer.status_code == 404 and item_id not in client.get("/web/review").text
    refused = [(a, d) for a, _, d in _audited(web, "web.refused") if a == "user:eve"]
    assert refused and "not-found" in refused[-1][1]
    client.close()


def test_daily_exposure_limit(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, migrated_sqlite(tmp_path / "tipline.db"))
    db = open_database(settings=settings)
    try:
        seeded = seed(db, settings, count=2)
        alice = _user(db, "alice")
        media.reveal(db.sessions, alice, seeded.items[0], 3, daily_limit=1)
        media.reveal(db.sessions, alice, seeded.items[0], 2, daily_limit=1)  # same item
        media.reveal(db.sessions, alice, seeded.items[1], 1, daily_limit=1)  # still blurred
        with pytest.raises(media.ExposureLimitError):
            media.reveal(db.sessions, alice, seeded.items[1], 2, daily_limit=1)
        view = item.open_item(
            db.sessions, alice, seeded.items[1], lease_seconds=60, default_level=0, daily_limit=1
        )
        assert view.exposure.today == 1 and view.exposure.reached and view.revealed == 1
        assert _audited_db(db, "review.reveal_refused") == [seeded.items[1]]
        with pytest.raises(InputError):
            web_auth.set_preferences(
                db.sessions, _info(db, "alice"), default_level=2, daily_limit=None
            )
    finally:
        db.close()


def _info(db: Database, name: str) -> web_auth.UserInfo:
    return next(u for u in web_auth.list_users(db.sessions) if u.name == name)


def test_exposure_limit_and_break_reminder_over_http(tmp_path: Path) -> None:
    with web_server(
        tmp_path, count=2, WEB_DAILY_EXPOSURE_LIMIT="1", WEB_SESSION_IDLE_MINUTES="600"
    ) as srv:
        client = srv.login("alice")
        first, second = srv.seeded.items
        page = client.get(f"/web/review/{first}")
        assert 'id="break"' not in page.text
        csrf = hidden(page.text, "csrf")
        revealed = client.post(f"/web/review/{first}/reveal", data={"csrf": csrf, "level": 2})
        assert revealed.status_code == 303
        client.get(f"/web/review/{second}")
        refused = client.post(f"/web/review/{second}/reveal", data={"csrf": csrf, "level": 2})
        assert refused.status_code == 403 and "daily exposure limit" in refused.text
        page = client.get(f"/web/review/{second}")
        assert "Daily limit reached" in page.text and "/0.jpg" in _image_url(page.text)
        client.close()
        # a session opened two hours ago: every page suggests a break
        policy = web_auth.SessionPolicy(idle=timedelta(hours=10), max_age=timedelta(hours=12))
        token, _ = web_auth.login(
            srv.db.sessions, "bob", PASSWORD, policy=policy, now=utcnow() - timedelta(hours=2)
        )
        tired = srv.client()
        tired.cookies.set("tipline_session", token, domain="127.0.0.1", path="/web")
        page = tired.get("/web/review")
        assert page.status_code == 200
        assert "You have been reviewing for 120 minutes" in page.text
        tired.close()


def test_a_video_is_shown_as_a_blurred_contact_sheet_never_played(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, migrated_sqlite(tmp_path / "tipline.db"))
    db = open_database(settings=settings)
    try:
        seed(db, settings, count=0)
        item_id = seed_video(db, settings, video(tmp_path))
        alice = _user(db, "alice")
        view = item.open_item(
            db.sessions, alice, item_id, lease_seconds=60, default_level=0, daily_limit=10
        )
        assert view.video and view.media is not None
        vault = Vault.from_settings(settings)
        limits = MediaLimits.of(settings)

        def shown(level: int) -> Image.Image:
            out = media.render(
                db.sessions, vault, alice, item_id, level, default_level=0, limits=limits
            )
            return _jpeg(out.data)

        blurred = shown(0)
        with pytest.raises(PermissionDeniedError):
            shown(3)
        media.reveal(db.sessions, alice, item_id, 3, daily_limit=10)
        sheet = shown(3)
        # a 4 x 3 grid of 4:3 frames, made smaller to fit 640 pixels
        assert sheet.size == blurred.size and sheet.size[0] == 640
        assert abs(sheet.size[0] / sheet.size[1] - 4 / 2.25) < 0.05
        grey = sheet.convert("L").convert("RGB")
        assert ImageStat.Stat(ImageChops.difference(sheet, grey)).mean[0] > 10  # colour
        assert _edge_energy(blurred) < _edge_energy(sheet) / 4
        assert (
            max(
                ImageStat.Stat(
                    ImageChops.difference(blurred, blurred.convert("L").convert("RGB"))
                ).extrema[0]
            )
            <= 2
        )
        # a damaged "video" is a clear error, not a crash
        with pytest.raises(MediaError):
            media.contact_sheet(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, limits=limits)
    finally:
        db.close()


def test_a_reviewers_default_level_is_still_blurred_and_not_a_view(web: WebServer) -> None:
    # on the module's server, in a tenant of its own (a reviewer whose preferences change
    # and an item decided here are seen by no other test)
    web_auth.add_user(web.db.sessions, "frank", PASSWORD, role=Role.REVIEWER, tenant="zeta")
    banks.create_bank(web.db, "known-zeta", tenant="zeta")
    in_transaction(
        web.db.sessions, actions.add_rule, action=actions.ActionKind.ENQUEUE_REVIEW, tenant="zeta"
    )
    item_id, picture = add_matched_picture(
        web.db, Vault.from_settings(web.settings), "known-zeta", 40, tenant="zeta"
    )
    client = web.login("frank")
    page = client.get("/web/preferences")
    saved = client.post(
        "/web/preferences",
        data={"csrf": hidden(page.text, "csrf"), "default_level": "1", "daily_limit": "5"},
    )
    assert saved.status_code == 303
    too_sharp = client.post(
        "/web/preferences", data={"csrf": hidden(page.text, "csrf"), "default_level": "2"}
    )
    assert too_sharp.status_code == 400
    page = client.get(f"/web/review/{item_id}")
    url = _image_url(page.text)
    assert "/1.jpg" in url and "Unblurred today: 0 of 5 items" in page.text
    light = _jpeg(client.get(url).content)
    assert (
        max(
            ImageStat.Stat(ImageChops.difference(light, light.convert("L").convert("RGB"))).extrema[
                0
            ]
        )
        <= 2
    )
    sharp = _jpeg(media.render_image(picture, 3, max_pixels=10**8))
    assert _edge_energy(light) < _edge_energy(sharp) / 2
    assert client.get(url.replace("/1.jpg", "/2.jpg")).status_code == 403
    done = client.post(
        f"/web/review/{item_id}/decide",
        data={"csrf": hidden(page.text, "csrf"), "verdict": "confirm", "classification": "B1"},
    )
    assert done.status_code == 303
    from tipline.services.reports import service as reports

    report = re.search(r"report=([0-9A-Z]+)", done.headers["location"])
    assert report is not None
    detail = reports.get_report(web.db.sessions, _user(web.db, "frank"), report.group(1))
    assert [f["viewed_by_esp"] for f in detail.files] == [False]
    client.close()
