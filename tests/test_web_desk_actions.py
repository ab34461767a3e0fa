"""Deciding from the analyst's desk, against a real server of the clearinghouse role
only (reports filed through the ISPWS intake over HTTP, triaged by the server): an
analyst lands on the desk, sees each file as a blurred grey thumbnail (a signed,
short-lived URL; altered or another session's links refused and audited), reveals
under the daily exposure limit, routes the report (the page previews the referral
package: exactly the members the built package has), confirms and rejects with
CSRF-checked forms; a second decision is a conflict. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat
from sqlalchemy import select

from _clock import HANG_SECONDS
from _geo import city_record, write_geo_db
from _intake_media import report_xml
from _intake_server import IntakeServer, intake_server
from _web_seed import picture, video
from _web_server import hidden
from conftest import BACKENDS, migrated_database
from test_clearinghouse_analyst import PASSWORDS, file_report, wait_triaged
from tipline.config import RoutingAgency, RoutingTable
from tipline.services import web_auth
from tipline.services.auth import Role
from tipline.store.audit import AuditRecord
from tipline.store.clearinghouse_triage import TriageRow
from tipline.store.web import ReviewRevealRow

PASSWORD = "a long enough password"
TABLE = RoutingTable(
    agencies={"icac-ca": RoutingAgency(name="California ICAC Task Force", media=True)},
    subdivisions={"US-CA": "icac-ca"},
)


@contextmanager
def clearinghouse_desk(db_url: str, data_dir: Path) -> Iterator[tuple[IntakeServer, list[int]]]:
    """The clearinghouse role alone, a daily exposure limit of 1, users ana (analyst) and
    rev (reviewer), two triaged reports: r1 with two generated pictures (an address
    located in California, routed as triaged to an agency that takes media), r2 with one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    geo = write_geo_db(data_dir / "geo.mmdb", {"8.0.0.0/8": city_record("US", "CA")})
    with intake_server(
        db_url,
        data_dir / "ch",
        web_cookie_secure=False,
        web_daily_exposure_limit=1,
        geoip_database=geo,
        routing_table=TABLE,
    ) as srv:
        for name, password in PASSWORDS.items():
            srv.add_provider(name, password)
        web_auth.add_user(srv.sessions, "ana", PASSWORD, role=Role.ANALYST)
        web_auth.add_user(srv.sessions, "rev", PASSWORD, role=Role.REVIEWER)
        r1, _ = file_report(
            srv,
            "esp-a",
            [_photo(1), _photo(2)],
            xml=report_xml(ips=(("8.8.8.8", False),)),
        )
        r2, _ = file_report(srv, "esp-b", [_photo(3)], xml=report_xml())
        wait_triaged(srv, r1, r2)
        yield srv, [r1, r2]


@pytest.fixture(scope="module", params=BACKENDS)
def desk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[IntakeServer, list[int]]]:
    """One desk per backend for the module's tests (filing and triaging the reports
    costs seconds of CPU): a test that reveals files logs in as an analyst of its own,
    with a daily exposure of its own, and reads the audit records of that analyst."""
    folder = tmp_path_factory.mktemp("desk")
    with (
        migrated_database(request.param, request, folder) as url,
        clearinghouse_desk(url, folder) as running,
    ):
        yield running


def _photo(seed: int) -> bytes:
    """A generated, colourful, high-contrast benign picture as a JPEG."""
    out = io.BytesIO()
    Image.open(io.BytesIO(picture(seed))).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def _client(srv: IntakeServer) -> httpx.Client:
    return httpx.Client(
        base_url=srv.url.removesuffix("/ispws"), timeout=HANG_SECONDS, trust_env=False
    )


def _login(srv: IntakeServer, name: str) -> tuple[httpx.Client, httpx.Response]:
    """Log in without naming a page to go to; the answer after following redirects."""
    client = _client(srv)
    token = hidden(client.get("/web/login").text, "login_token")
    landed = client.post(
        "/web/login",
        data={"login_token": token, "name": name, "password": PASSWORD},
        follow_redirects=True,
    )
    return client, landed


def _thumbs(html: str) -> dict[str, str]:
    """file id -> its thumbnail's URL on a desk report page."""
    return {
        fid: url.replace("&amp;", "&")
        for url, fid in re.findall(r'src="(/web/desk/files/([0-9a-f]+)/[0-9]\.jpg\?[^"]+)"', html)
    }


def _jpeg(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG"
    return im.convert("RGB")


def _edges(im: Image.Image) -> float:
    """Mean edge strength, the picture's own border left out (the filter sees one)."""
    edges = im.convert("L").filter(ImageFilter.FIND_EDGES)
    return float(ImageStat.Stat(edges.crop((2, 2, im.width - 2, im.height - 2))).mean[0])


def _colour(im: Image.Image) -> float:
    grey = im.convert("L").convert("RGB")
    return float(sum(ImageStat.Stat(ImageChops.difference(im, grey)).mean) / 3)


def _actions(srv: IntakeServer, action: str) -> list[tuple[str, dict[str, Any]]]:
    """(actor, details) of each audit record of ``action``, in order."""
    with srv.sessions() as s:
        rows = s.scalars(
            select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
        )
        return [(r.actor, json.loads(r.details) if r.details else {}) for r in rows]


def test_an_analyst_decides_from_the_desk(desk: tuple[IntakeServer, list[int]]) -> None:
    srv, (r1, r2) = desk
    web, landed = _login(srv, "ana")
    with closing(web):
        # an analyst lands on the desk; the provider's review pages are not served here
        assert landed.url.path == "/web/desk" and "Analyst desk" in landed.text
        assert web.get("/web/review").status_code == 404
        assert 'href="/web/review"' not in landed.text

        page = web.get(f"/web/desk/reports/{r1}")
        assert page.status_code == 200, page.text
        assert "Unblurred today: 0 of 1 files." in page.text
        thumbs = _thumbs(page.text)
        assert len(thumbs) == 2 and all("/0.jpg" in u for u in thumbs.values())
        first, second = sorted(thumbs)
        shown = web.get(thumbs[first])
        assert shown.status_code == 200
        assert shown.headers["cache-control"] == "no-store"
        blurred = _jpeg(shown.content)
        assert max(blurred.size) <= 320 and _colour(blurred) < 1.0

        # an altered level, a forged signature, another session's link: refused, audited
        refused_before = len(_actions(srv, "web.refused"))
        assert web.get(thumbs[first].replace("/0.jpg", "/2.jpg")).status_code == 403
        assert web.get(re.sub(r"sig=[^&]+", "sig=AAAA", thumbs[first])).status_code == 403
        other, _ = _login(srv, "ana")
        with closing(other):
            assert other.get(thumbs[first]).status_code == 403
        assert len(_actions(srv, "web.refused")) == refused_before + 3

        # a reveal needs the form's CSRF token, and the file must be the report's
        csrf = hidden(page.text, "csrf")
        reveal = f"/web/desk/reports/{r1}/files/{first}/reveal"
        assert web.post(reveal, data={"level": "2"}).status_code == 403
        elsewhere = f"/web/desk/reports/{r2}/files/{first}/reveal"
        assert web.post(elsewhere, data={"csrf": csrf, "level": "1"}).status_code == 404
        with srv.sessions() as s:
            assert s.scalars(select(ReviewRevealRow)).first() is None
        for level in (1, 2):
            done = web.post(reveal, data={"csrf": csrf, "level": str(level)})
            assert done.status_code == 303, done.text
        page = web.get(f"/web/desk/reports/{r1}")
        assert "Unblurred today: 1 of 1 files." in page.text
        url = _thumbs(page.text)[first]
        assert "/2.jpg" in url
        sharp = _jpeg(web.get(url).content)
        assert _colour(sharp) < 1.0  # level 2: sharp but still grey
        assert _edges(blurred) < _edges(sharp) / 4
        # "blur again" shows it at level 0 once more
        again = _thumbs(web.get(f"/web/desk/reports/{r1}", params={"blur": first}).text)
        assert "/0.jpg" in again[first]
        reveals = [d for a, d in _actions(srv, "desk.reveal") if a == "user:ana"]
        assert [d["level"] for d in reveals] == [1, 2] and reveals[0]["report"] == r1
        reads = [
            d for a, d in _actions(srv, "vault.read") if a == "user:ana" and d.get("via") == "desk"
        ]
        assert {d["level"] for d in reads} == {0, 2}

        # the daily limit (1): a second file stays blurred; the first may go to colour
        limited = web.post(
            f"/web/desk/reports/{r1}/files/{second}/reveal", data={"csrf": csrf, "level": "2"}
        )
        assert limited.status_code == 403 and "daily exposure limit reached" in limited.text
        assert [a for a, _ in _actions(srv, "desk.reveal_refused")] == ["user:ana"]
        assert web.post(reveal, data={"csrf": csrf, "level": "3"}).status_code == 303
        colour = _jpeg(web.get(_thumbs(web.get(f"/web/desk/reports/{r1}").text)[first]).content)
        assert _colour(colour) > 5.0

        # routed as it was triaged (a geolocation database is set); routed again from the
        # desk; the preview names exactly the built package's members
        assert "Not routed yet." not in page.text
        assert "California ICAC Task Force" in page.text
        routed = web.post(f"/web/desk/reports/{r1}/route", data={"csrf": csrf})
        assert routed.status_code == 303, routed.text
        page = web.get(routed.headers["location"])
        assert "California ICAC Task Force" in page.text
        assert "Media included" in page.text
        members = re.findall(
            r"<li>([^<]+)</li>", page.text.split('id="package-members"', 1)[1].split("</ul>")[0]
        )
        # the package downloaded from the desk (CSRF-checked) has exactly those members
        referral_url = f"/web/desk/reports/{r1}/referral"
        assert web.post(referral_url).status_code == 403
        package = web.post(referral_url, data={"csrf": csrf})
        assert package.status_code == 200, package.text
        assert package.headers["content-type"] == "application/zip"
        assert package.headers["cache-control"] == "no-store"
        assert package.headers["x-content-sha256"] == hashlib.sha256(package.content).hexdigest()
        with zipfile.ZipFile(io.BytesIO(package.content)) as z:
            assert sorted(members) == sorted(z.namelist())
        ((actor, details),) = _actions(srv, "referral.package")
        assert actor == "user:ana" and details["media_files"] == 2
        assert sum(m.startswith("media/") for m in members) == 2

        # decisions: CSRF-checked, audited with the analyst, a second one is a conflict
        assert (
            web.post(f"/web/desk/reports/{r1}/decide", data={"verdict": "confirm"}).status_code
            == 403
        )
        confirmed = web.post(
            f"/web/desk/reports/{r1}/decide",
            data={"csrf": csrf, "verdict": "confirm", "classification": "A1", "note": "seen"},
        )
        assert confirmed.status_code == 303, confirmed.text
        page = web.get(confirmed.headers["location"])
        assert "Confirmed: its new material was published" in page.text
        assert 'id="desk-confirm-form"' not in page.text
        again = web.post(f"/web/desk/reports/{r1}/decide", data={"csrf": csrf, "verdict": "reject"})
        assert again.status_code == 409 and "already confirmed" in again.text
        rejected = web.post(
            f"/web/desk/reports/{r2}/decide",
            data={"csrf": csrf, "verdict": "reject", "note": "not material"},
        )
        assert rejected.status_code == 303
        assert (
            web.post(
                f"/web/desk/reports/{r2}/decide", data={"csrf": csrf, "verdict": "publish"}
            ).status_code
            == 400
        )
        with srv.sessions() as s:
            t1, t2 = s.get(TriageRow, r1), s.get(TriageRow, r2)
            assert t1 is not None and t2 is not None
            assert (t1.status, t1.decided_by, t1.note) == ("confirmed", "user:ana", "seen")
            assert (t2.status, t2.note) == ("rejected", "not material")
        confirm = _actions(srv, "clearinghouse.confirm")
        assert len(confirm) == 1 and confirm[0][0] == "user:ana"
        assert confirm[0][1]["classification"] == "A1"

    # a reviewer has nothing on a clearinghouse-only server: the desk refuses them
    rev, landed = _login(srv, "rev")
    with closing(rev):
        assert landed.url.path == "/web/desk" and landed.status_code == 403
        assert rev.get(f"/web/desk/reports/{r1}").status_code == 403


def test_a_video_on_the_desk_is_a_blurred_grey_contact_sheet(
    desk: tuple[IntakeServer, list[int]], tmp_path: Path
) -> None:
    srv, _ = desk
    web_auth.add_user(srv.sessions, "vid", PASSWORD, role=Role.ANALYST)  # a daily limit of its own
    clip = video(tmp_path)
    rid, (fid,) = file_report(srv, "esp-b", [clip], xml=report_xml())
    wait_triaged(srv, rid)
    web, _ = _login(srv, "vid")
    with closing(web):
        page = web.get(f"/web/desk/reports/{rid}")
        assert "a video shown as a contact sheet, never played" in page.text
        assert "<video" not in page.text
        sheet = _jpeg(web.get(_thumbs(page.text)[fid]).content)
        # 12 frames in 3 rows of 4 (each 4:3), scaled to 320 px wide: grey and blurred
        assert sheet.width == 320 and abs(sheet.height - 180) <= 2
        assert _colour(sheet) < 1.0
        csrf = hidden(page.text, "csrf")
        reveal = f"/web/desk/reports/{rid}/files/{fid}/reveal"
        for level in (1, 2, 3):
            assert web.post(reveal, data={"csrf": csrf, "level": str(level)}).status_code == 303
        page = web.get(f"/web/desk/reports/{rid}")
        sharp = _jpeg(web.get(_thumbs(page.text)[fid]).content)
        assert _colour(sharp) > 5.0 and _edges(sheet) < _edges(sharp) / 4
