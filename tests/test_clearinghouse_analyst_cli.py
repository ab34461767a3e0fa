"""``tipline analyst``: the queue, a report, confirm, reject and route from the command
line, on reports filed through the intake and triaged (routing as they are triaged)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from _clearinghouse_fixtures import file_report, ip_event, make_intake
from _cli import run_tipline
from _geo import city_record, write_geo_db
from tipline.config import RoutingAgency, RoutingTable, Settings
from tipline.services.clearinghouse import Triager, routing, triage_report
from tipline.services.database import Database
from tipline.store.audit import AuditRecord

TABLE = RoutingTable(
    agencies={
        "icac-ca": RoutingAgency(name="California ICAC Task Force", media=True),
        "nca": RoutingAgency(name="UK National Crime Agency"),
    },
    subdivisions={"US-CA": "icac-ca"},
    countries={"GB": "nca"},
)


def test_the_analyst_commands(tmp_path: Path, db_url: str) -> None:
    geo = write_geo_db(
        tmp_path / "geo.mmdb",
        {"8.0.0.0/8": city_record("US", "CA"), "81.2.0.0/16": city_record("GB", "ENG")},
    )
    folder = tmp_path / "ch"
    with make_intake(folder, db_url) as intake:
        engine = intake.sessions.kw["bind"]
        url = engine.url.render_as_string(hide_password=False)
        settings = Settings(  # type: ignore[call-arg]
            data_dir=folder, database_url=url, geoip_database=geo, routing_table=TABLE
        )
        one, _ = file_report(intake, person_ips=(ip_event("8.1.0.1"),))
        two, _ = file_report(
            intake,
            person_ips=(ip_event("81.2.0.9"),),
            files=(("a.bin", b"first file", None), ("b.bin", b"second file", None)),
        )
        triager = Triager.open(Database(engine, intake.sessions, url), settings)
        try:
            for rid in (one, two):
                assert triage_report(triager, rid) is not None
        finally:
            triager.close()
        env = {
            "PATH": "/usr/bin:/bin",
            "TIPLINE_DATABASE_URL": url,
            "TIPLINE_DATA_DIR": str(folder),
            "TIPLINE_GEOIP_DATABASE": str(geo),
            "TIPLINE_ROUTING_TABLE": TABLE.model_dump_json(),
        }

        listed = run_tipline(["analyst", "queue", "--json"], env=env)
        assert listed.returncode == 0, listed.stderr
        items = [json.loads(line) for line in listed.stdout.splitlines()]
        assert {i["report_id"] for i in items} == {one, two}
        assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
        text = run_tipline(["analyst", "queue"], env=env)
        assert text.returncode == 0 and "2 pending report(s)" in text.stderr
        assert all(line.split()[0] in (str(one), str(two)) for line in text.stdout.splitlines())

        shown = run_tipline(["analyst", "show", str(two), "--json"], env=env)
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        assert view["report"]["report_id"] == two and len(view["files"]) == 2
        plain = run_tipline(["analyst", "show", str(two)], env=env)
        assert plain.returncode == 0 and plain.stdout.count("  file ") == 2

        confirmed = run_tipline(
            ["analyst", "confirm", str(two), "--classification", "A2", "--note", "seen"], env=env
        )
        assert confirmed.returncode == 0, confirmed.stderr
        assert f"report {two} confirmed, 2 hash(es) published" in confirmed.stderr
        rejected = run_tipline(["analyst", "reject", str(one), "--note", "benign"], env=env)
        assert rejected.returncode == 0 and f"report {one} rejected" in rejected.stderr
        pending = run_tipline(["analyst", "queue", "--json"], env=env)
        assert pending.returncode == 0 and pending.stdout == ""

        # decided reports cannot be decided again: one line, exit 2
        again = run_tipline(["analyst", "reject", str(two)], env=env)
        assert again.returncode == 2 and again.stderr.startswith("error: ")
        assert len(again.stderr.strip().splitlines()) == 1
        bad = run_tipline(["analyst", "confirm", str(one), "--classification", "Z9"], env=env)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
        missing = run_tipline(["analyst", "show", "999999"], env=env)
        assert missing.returncode == 2 and "999999" in missing.stderr

        # routed when triaged; an override, then the table again
        assert routing.latest_decision(intake.sessions, one).agency == "icac-ca"
        moved = run_tipline(["analyst", "route", str(one), "--agency", "nca"], env=env)
        assert moved.returncode == 0, moved.stderr
        assert moved.stdout.split()[:3] == [str(one), "nca", "analyst"]
        back = run_tipline(["analyst", "route", str(one)], env=env)
        assert back.stdout.split()[:3] == [str(one), "icac-ca", "subdivision"]
        unknown = run_tipline(["analyst", "route", str(one), "--agency", "fbi"], env=env)
        assert unknown.returncode == 2
        assert unknown.stderr.strip() == (
            "error: unknown agency 'fbi' (the routing table has: icac-ca, nca)"
        )
        with intake.sessions() as s:
            actions = [
                r.action
                for r in s.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.actor == "cli", AuditRecord.target_id == str(one))
                    .order_by(AuditRecord.seq)
                )
            ]
        assert actions == ["clearinghouse.reject", "routing.decide", "routing.decide"]
