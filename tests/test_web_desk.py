"""The clearinghouse analyst's desk in the web UI, against a real server serving both
roles: reports filed through the ISPWS intake with plain HTTP and triaged by the
serving process; an analyst user logs in and reads the dashboard (SVG charts and
tables with the seeded numbers), the queue (ordered by score, factors with weights) and
one report; reviewers and tenant-bound analysts are refused. The dashboard service's
windows, bands, ages and countries are checked with a fixed clock — on SQLite and
PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete
from ulid import ULID

from _clock import HANG_SECONDS
from _intake_media import pictures, report_xml, variant
from _intake_server import IntakeServer, intake_server
from _web_server import hidden
from conftest import BACKENDS, migrated_database
from test_clearinghouse_analyst import PASSWORDS, file_report, wait_triaged
from tipline.errors import PermissionDeniedError
from tipline.services import web_auth
from tipline.services.auth import Principal, Role
from tipline.services.clearinghouse import dashboard
from tipline.store.clearinghouse_triage import TriageRow
from tipline.store.db import transaction
from tipline.store.referrals import RoutingDecisionRow

PASSWORD = "a long enough password"
USERS = (
    ("ana", Role.ANALYST, None),
    ("boss", Role.ADMIN, None),
    ("rev", Role.REVIEWER, None),
    ("tenant-ana", Role.ANALYST, "acme"),
)


@contextmanager
def desk_server(db_url: str, data_dir: Path) -> Iterator[tuple[IntakeServer, list[int]]]:
    """A server of both roles with users (``USERS``) and three triaged reports: picture a
    in reports 1 (with picture b, file A1) and 2 (a smaller copy), picture c in 3."""
    with intake_server(db_url, data_dir, role="both", web_cookie_secure=False) as srv:
        for name, password in PASSWORDS.items():
            srv.add_provider(name, password)
        for name, role, tenant in USERS:
            web_auth.add_user(srv.sessions, name, PASSWORD, role=role, tenant=tenant)
        a, b, c = pictures(3)
        r1, _ = file_report(
            srv,
            "esp-a",
            [variant(a, "base"), variant(b, "base")],
            xml=report_xml(emails=("reported@example.org",)),
            details={0: {"classification": "A1"}},
        )
        r2, _ = file_report(
            srv, "esp-b", [variant(a, "small")], xml=report_xml(emails=("reported@example.org",))
        )
        r3, _ = file_report(srv, "esp-b", [variant(c, "base")], xml=report_xml())
        wait_triaged(srv, r1, r2, r3)
        yield srv, [r1, r2, r3]


@pytest.fixture(scope="module", params=BACKENDS)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[IntakeServer, list[int]]]:
    """One desk server per backend for the module's tests (filing and triaging the
    reports costs seconds of CPU). A test that adds rows removes them."""
    folder = tmp_path_factory.mktemp("desk")
    with (
        migrated_database(request.param, request, folder) as url,
        desk_server(url, folder / "ch") as running,
    ):
        yield running


def _login(srv: IntakeServer, name: str) -> httpx.Client:
    client = httpx.Client(
        base_url=srv.url.removesuffix("/ispws"), timeout=HANG_SECONDS, trust_env=False
    )
    token = hidden(client.get("/web/login").text, "login_token")
    answer = client.post(
        "/web/login",
        data={"login_token": token, "name": name, "password": PASSWORD, "next": "/web/desk"},
    )
    assert answer.status_code == 303, answer.text
    return client


def _rows(html: str, table_id: str) -> list[list[str]]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_desk_pages(seeded: tuple[IntakeServer, list[int]]) -> None:
    srv, (r1, r2, r3) = seeded
    with closing(_login(srv, "ana")) as web:
        page = web.get("/web/desk")
        assert page.status_code == 200, page.text
        html = page.text
        assert 'href="/web/desk"' in html  # the nav link
        # four charts (no country yet), each an accessible image naming its values
        charts = re.findall(r'<svg [^>]*role="img"[^>]*>.*?</svg>', html, re.S)
        assert len(charts) == 4  # no routing decision yet: no country chart
        assert all("<title" in s and "<desc" in s for s in charts)
        with srv.sessions() as s:
            day = s.get(TriageRow, r1).triaged_at.date().isoformat()  # type: ignore[union-attr]
        per_day = {row[0]: row[1:] for row in _rows(html, "t-days")[1:]}
        assert len(per_day) == 14
        assert per_day[day] == ["3", "4"]
        assert sum(int(r) for r, _ in per_day.values()) == 3
        assert f"{day[5:]}: 3" in next(s for s in charts if "chart-reports" in s)
        dedup = dict(_rows(html, "t-dedup"))  # type: ignore[arg-type]
        assert dedup["Files de-duplicated"] == "4"
        assert dedup["Distinct items (clusters)"] == "3"
        assert dedup["Duplicates"] == "1"
        assert dedup["Files per distinct item"] == "1.33"
        assert dedup["New (never seen, not known)"] == "3"
        assert dedup["Seen (copy of an earlier report)"] == "1"
        backlog = {row[0].split(" ")[0]: row[-1] for row in _rows(html, "t-backlog")[1:]}
        assert sum(int(n) for n in backlog.values()) == 3
        clusters = _rows(html, "t-clusters")[1:]
        assert clusters[0][1:] == ["2", "2"]  # picture a: two files from two reports
        assert "No report has been routed yet" in html

        queue = web.get("/web/desk/queue").text
        scores = [float(s) for s in re.findall(r'data-score="([0-9.]+)"', queue)]
        ids = [int(i) for i in re.findall(r'<tr id="r-(\d+)"', queue)]
        assert sorted(ids) == sorted([r1, r2, r3])
        assert scores == sorted(scores, reverse=True)
        assert ids[0] == r1  # new material and an A1 classification
        row1 = queue.split(f'id="r-{r1}"', 1)[1].split("</tr>", 1)[0]
        assert "new_material" in row1 and "classification.A1" in row1
        assert "&times; 1" in row1 and f'href="/web/desk/reports/{r1}"' in row1

        report = web.get(f"/web/desk/reports/{r2}")
        assert report.status_code == 200, report.text
        assert "reported@example.org" in report.text
        assert f'href="/web/desk/reports/{r1}"' in report.text  # cluster link and linked report
        assert "pdq distance" in report.text
        # its one file as a thumbnail: a signed desk URL at level 0, nothing else
        images = re.findall(r'<img [^>]*src="([^"]+)"', report.text)
        assert len(images) == 1 and re.match(r"/web/desk/files/[0-9a-f]+/0\.jpg\?exp=", images[0])
        assert web.get("/web/desk/reports/999999").status_code == 404
        cluster_id = re.search(r'href="/web/desk/clusters/(\d+)"', report.text)
        assert cluster_id is not None
        cluster = web.get(f"/web/desk/clusters/{cluster_id.group(1)}")
        assert cluster.status_code == 200, cluster.text
        members = _rows(cluster.text, "cluster-files")[1:]
        assert [int(row[1]) for row in members] == [r1, r2]
        assert members[0][-1] == "first file of the cluster"
        assert members[1][-1].startswith("pdq distance")
        assert "<img" not in cluster.text
        assert web.get("/web/desk/clusters/999999").status_code == 404
        # routing without a geolocation database: a 503 page naming no setting or path
        csrf = hidden(report.text, "csrf")
        unrouted = web.post(f"/web/desk/reports/{r2}/route", data={"csrf": csrf})
        assert unrouted.status_code == 503
        assert (
            "the details are in the server" in unrouted.text
            and "TIPLINE_GEOIP" not in unrouted.text
        )

    with closing(_login(srv, "boss")) as web:
        assert web.get("/web/desk").status_code == 200
    # where each lands after a login that names no page: analyst the desk, reviewer the queue
    for name, landing in (("ana", "/web/desk"), ("rev", "/web/review"), ("boss", "/web/review")):
        with httpx.Client(base_url=srv.url.removesuffix("/ispws"), trust_env=False) as fresh:
            token = hidden(fresh.get("/web/login").text, "login_token")
            data = {"login_token": token, "name": name, "password": PASSWORD}
            first = fresh.post("/web/login", data=data)
            assert first.headers["location"] == "/web"
            assert fresh.get("/web").headers["location"] == landing, name
    for name in ("rev", "tenant-ana"):
        with closing(_login(srv, name)) as web:
            assert 'href="/web/desk"' not in web.get("/web/review").text
            for path in (
                "/web/desk",
                "/web/desk/queue",
                f"/web/desk/reports/{r1}",
                "/web/desk/clusters/1",
            ):
                assert web.get(path).status_code == 403, (name, path)
    anonymous = httpx.get(f"{srv.url.removesuffix('/ispws')}/web/desk", trust_env=False)
    assert anonymous.status_code == 303


def test_dashboard_service(seeded: tuple[IntakeServer, list[int]]) -> None:
    srv, (r1, r2, r3) = seeded
    analyst = Principal("k", Role.ANALYST)
    with srv.sessions() as s:
        triaged = max(s.get(TriageRow, r).triaged_at for r in (r1, r2, r3))  # type: ignore[union-attr]
    later = dashboard.dashboard(srv.sessions, analyst, now=triaged + timedelta(days=2))
    assert sum(d.reports for d in later.days) == 3 and sum(d.files for d in later.days) == 4
    assert sum(later.backlog.values()) == 3
    assert {
        label: sum(ages[label] for ages in later.backlog_ages.values())
        for label, _ in dashboard.AGES
    } == {"< 1 day": 0, "1-3 days": 3, "3-7 days": 0, "> 7 days": 0}
    gone = dashboard.dashboard(srv.sessions, analyst, now=triaged + timedelta(days=20))
    assert len(gone.days) == 14 and sum(d.reports for d in gone.days) == 0
    assert (
        gone.backlog_ages["high"]["> 7 days"]
        + gone.backlog_ages["medium"]["> 7 days"]
        + (gone.backlog_ages["low"]["> 7 days"])
        == 3
    )
    # the routing decision in force (the latest) counts; none located: "unlocated"
    decisions = [str(ULID()) for _ in range(3)]
    try:
        _route(srv, decisions, triaged, r1, r2)
        routed = dashboard.dashboard(srv.sessions, analyst, now=triaged)
        assert routed.countries == [("US", 1), ("unlocated", 1)]
    finally:  # the module's other tests see no routing decision
        with transaction(srv.sessions) as s:
            s.execute(delete(RoutingDecisionRow).where(RoutingDecisionRow.id.in_(decisions)))
    with pytest.raises(PermissionDeniedError):
        dashboard.dashboard(srv.sessions, Principal("k", Role.ANALYST, "acme"))
    with pytest.raises(PermissionDeniedError):
        dashboard.dashboard(srv.sessions, Principal("k", Role.REVIEWER))


def _route(srv: IntakeServer, ids: list[str], at: datetime, r1: int, r2: int) -> None:
    """Routing decisions ``ids``: r1 to GB, 5 minutes later to US; r2 unlocated."""
    with transaction(srv.sessions) as s:
        for id_, (rid, country, minutes) in zip(
            ids, ((r1, "GB", 0), (r1, "US", 5), (r2, None, 0)), strict=True
        ):
            s.add(
                RoutingDecisionRow(
                    id=id_,
                    report_id=rid,
                    agency=None,
                    agency_name=None,
                    media_allowed=False,
                    rule="country" if country else "unlocated",
                    rule_key=country,
                    country=country,
                    explanation={},
                    decided_at=at + timedelta(minutes=minutes),
                    decided_by="test",
                )
            )
