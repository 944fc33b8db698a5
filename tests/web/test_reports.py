"""The reports' figures against a fixture whose answers are worked out by hand (the comments
show the arithmetic), on a real SQLite store and on a real PostgreSQL one (the same history gives
the same figures), through the JSON and CSV routes."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from andon.config import PlantConfig, hash_token
from andon.runtime import reports
from andon.runtime.api import make_app
from andon.runtime.store import SqliteStore, Store
from andon.runtime.store_pg import PgStore

TOKEN = "reports-viewer-0123456789"
BERLIN = ZoneInfo("Europe/Berlin")
T0 = int(datetime(2026, 3, 2, 6, 0, tzinfo=BERLIN).timestamp() * 1000)  # early shift starts
NOW = int(datetime(2026, 3, 3, 0, 0, tzinfo=BERLIN).timestamp() * 1000)  # both shifts over
KANBAN = [{"part": "P1", "cards": {"lost": 1, "total": 3}, "recommended_cards": 4}]


def at(minutes: float | None) -> int | None:
    """T0 + minutes, in ms."""
    return None if minutes is None else T0 + int(minutes * 60_000)


def call(id, station, cause, opened, ack=None, stopped=None, resolved=None, reason=None):
    return {
        "id": id, "line": "L1", "station": station, "cause": cause, "opened": at(opened),
        "acknowledged": at(ack), "stopped": at(stopped), "resolved": at(resolved),
        "reason": reason,
    }  # fmt: skip


def stop(id, station, cause, call, started, ended):
    return {
        "id": id, "line": "L1", "station": station, "cause": cause, "call": call,
        "started": at(started), "ended": at(ended),
    }  # fmt: skip


CALLS = [
    call("C-000001", "S1", "cord", 60, ack=62, stopped=61, resolved=70),
    call("C-000002", "S2", "quality", 100, ack=101, resolved=110),  # no stop
    call("C-000003", "S2", "quality", 200, ack=205, stopped=202, resolved=230),
    call("C-000004", "S1", "maintenance", 210, stopped=212, resolved=240),  # in C3's stop
    call("C-000005", "S1", "cord", 500, ack=501, stopped=501, resolved=511),  # late shift
    call("C-000000", "S1", "cord", -24 * 60, ack=-24 * 60 + 1, resolved=-24 * 60 + 5),  # before
]
# The stops as the core booked them: C3 and C4 overlap, one stop booked to C3 (first to stop)
STOPS = [
    stop("D-000001", "S1", "cord", "C-000001", 61, 70),  # 9 min
    stop("D-000002", "S2", "quality", "C-000003", 202, 240),  # 38 min
    stop("D-000003", "S1", "cord", "C-000005", 501, 511),  # 10 min, late shift
    stop("D-000000", "S1", "offline", None, -24 * 60, -24 * 60 + 30),  # the day before
]
# C3 was closed when a supervisor gave it a reason code in the console
ANNOTATION = {"id": "C-000003", "line": "L1", "reason": "tooling", "comment": "worn die",
              "by": "boss"}  # fmt: skip
ORDERS = [
    {"id": "K1", "part": "P1", "line": "L1", "station": "S1", "posted": at(0), "due": at(60),
     "received": at(120), "overdue": False},  # lead 120 min
    {"id": "K2", "part": "P1", "line": "L1", "station": "S1", "posted": at(60), "due": at(120),
     "received": at(300), "overdue": True},  # lead 240 min
    {"id": "K3", "part": "P1", "line": "L1", "station": "S1", "posted": at(400), "due": at(460),
     "received": None, "overdue": False},
]  # fmt: skip


def plant(tmp_path, store_url: str | None = None) -> PlantConfig:
    # 2026-03-02 is a Monday: both shifts run. Working time: early 8 h - a 30 min break = 450 min,
    # late 480 min.
    brk = [{"start": "12:00", "end": "12:30"}]
    return PlantConfig.model_validate(
        {
            "site": "P1",
            "timezone": "Europe/Berlin",
            "gateway": {"database": str(tmp_path / "andon.db"), "http": {"port": 8088}},
            "lines": [
                {
                    "id": "L1",
                    "name": "Line 1",
                    "shifts": [
                        {
                            "name": "early",
                            "start": "06:00",
                            "end": "14:00",
                            "breaks": brk,
                            "demand": 450,
                        },
                        {"name": "late", "start": "14:00", "end": "22:00", "demand": 480},
                    ],
                    "stations": [
                        {"id": s, "name": s, "board": f"B{s}", "profile": "esp32-devkitc"}
                        for s in ("S1", "S2")
                    ],
                }
            ],
            "api_tokens": [{"name": "viewer", "hash": hash_token(TOKEN)}],
            "store": {"url": store_url},
        }
    )


def store_history(store: Store, more: tuple[tuple[str, dict], ...] = ()) -> None:
    """The fixture's records (and `more`: kind, record), written as the gateway writes the
    core's."""
    with store.transaction() as tx:
        for c in CALLS:
            tx.record("call", c["id"], c)
        for o in ORDERS:
            tx.record("order", o["id"], o)
        for d in STOPS:
            tx.record("stop", d["id"], d)
        tx.record("annotation", ANNOTATION["id"], ANNOTATION)
        for kind, record in more:
            tx.record(kind, record["id"], record)
    store.close()


def sqlite_plant(tmp_path, more: tuple = ()) -> PlantConfig:
    config = plant(tmp_path)
    store_history(SqliteStore(config.gateway.database), more)
    return config


def postgres_plant(tmp_path, url: str, more: tuple = ()) -> PlantConfig:
    config = plant(tmp_path, store_url=url)
    store_history(PgStore(url), more)
    assert not config.gateway.database.exists()  # nothing to read but PostgreSQL
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request, tmp_path) -> PlantConfig:
    """The fixture's plant, its history in either store: every figure below holds on both."""
    if request.param == "sqlite":
        return sqlite_plant(tmp_path)
    return postgres_plant(tmp_path, request.getfixturevalue("postgres"))


def figures(config: PlantConfig, shift: str | None = None) -> reports.Figures:
    period = reports.period_of(config, date(2026, 3, 2), date(2026, 3, 2), shift)
    return reports.Figures(config, period, KANBAN, NOW)


def test_calls_per_cause_time_to_acknowledge_and_mttr(config):
    by_cause = figures(config).calls_report()["by_cause"]  # C0 is the day before: left out
    assert by_cause == [
        # cord C1, C5: acks 120 s and 60 s -> mean 90, p90 = the 2nd of 2 (ceil(0.9 * 2)) = 120;
        # repaired in 10 min and 11 min -> MTTR (600 + 660) / 2 = 630 s
        {"cause": "cord", "calls": 2, "acknowledged": 2, "ack_mean_s": 90.0,
         "ack_p90_s": 120.0, "resolved": 2, "mttr_s": 630.0},
        # quality C2, C3: acks 60 s and 300 s -> mean 180, p90 300; 600 s and 1800 s -> 1200
        {"cause": "quality", "calls": 2, "acknowledged": 2, "ack_mean_s": 180.0,
         "ack_p90_s": 300.0, "resolved": 2, "mttr_s": 1200.0},
        # maintenance C4: never acknowledged; opened 210, resolved 240 -> 1800 s
        {"cause": "maintenance", "calls": 1, "acknowledged": 0, "ack_mean_s": None,
         "ack_p90_s": None, "resolved": 1, "mttr_s": 1800.0},
    ]  # fmt: skip
    by_station = figures(config).calls_report()["by_station"]
    assert [(r["station"], r["calls"]) for r in by_station] == [("S1", 3), ("S2", 2)]


def test_downtime_from_the_cores_stop_records_with_their_reason_codes(config):
    downtime = figures(config).downtime_report()
    # the core's stops: 61-70 (S1 cord, 9 min), 202-240 (S2 quality, 38 min, reason "tooling"
    # from the console), 501-511 (S1 cord, 10 min); the offline stop was the day before.
    # total 57 min: S2 38/57 = 66.7 %, S1 19/57 = 33.3 %
    assert downtime["by_station"] == [
        {"line": "L1", "station": "S2", "stops": 1, "minutes": 38.0, "share_pct": 66.7,
         "cumulative_pct": 66.7},
        {"line": "L1", "station": "S1", "stops": 2, "minutes": 19.0, "share_pct": 33.3,
         "cumulative_pct": 100.0},
    ]  # fmt: skip
    assert [(r["cause"], r["minutes"]) for r in downtime["by_cause"]] == [
        ("quality", 38.0),
        ("cord", 19.0),
    ]
    assert [(r["reason"], r["minutes"]) for r in downtime["by_reason"]] == [
        ("tooling", 38.0),
        ("-", 19.0),
    ]


def test_stops_per_shift_and_availability(config):
    found = figures(config)
    assert [
        (r["shift"], r["stops"], r["stop_minutes"]) for r in found.stops_report()["per_shift"]
    ] == [
        ("early", 2, 47.0),  # 9 + 38
        ("late", 1, 10.0),
    ]
    assert found.availability_report()["per_line_and_shift"] == [
        # (450 - 47) / 450 = 89.56 %
        {"line": "L1", "shift": "early", "start": "2026-03-02 06:00", "planned_minutes": 450.0,
         "stop_minutes": 47.0, "availability_pct": 89.6},
        # (480 - 10) / 480 = 97.92 %
        {"line": "L1", "shift": "late", "start": "2026-03-02 14:00", "planned_minutes": 480.0,
         "stop_minutes": 10.0, "availability_pct": 97.9},
    ]  # fmt: skip


def test_a_shift_filter_keeps_only_that_shifts_calls_and_stops(config):
    early = figures(config, "early")
    cord = next(r for r in early.calls_report()["by_cause"] if r["cause"] == "cord")
    assert cord["calls"] == 1  # C5 was in the late shift
    assert sum(r["minutes"] for r in early.downtime_report()["by_station"]) == 47.0


def test_kanban_lead_times_overdue_lost_and_recommended(config):
    found = figures(config).kanban_report()
    # received K1 after 120 min, K2 after 240 -> mean 180, p90 = 2nd of 2 = 240
    assert found["loops"] == [
        {"part": "P1", "orders": 3, "received": 2, "lead_mean_min": 180.0, "lead_p90_min": 240.0,
         "overdue": 1, "lost_cards": 1, "cards": 3, "recommended_cards": 4},
    ]  # fmt: skip
    assert [o["order"] for o in found["overdue_orders"]] == ["K2"]


class StandIn:
    def view(self) -> dict:
        return {"kanban": KANBAN}

    def watch(self, changed) -> None:
        pass

    def health(self) -> dict:
        return {}


def test_the_routes_serve_the_same_figures_as_json_csv_and_a_page(config):
    client = TestClient(make_app(config, StandIn()), headers={"Authorization": f"Bearer {TOKEN}"})
    query = "start=2026-03-02&end=2026-03-02"
    downtime = client.get(f"/api/v1/reports/downtime?{query}").json()
    assert [r["minutes"] for r in downtime["by_station"]] == [38.0, 19.0]
    calls = client.get(f"/api/v1/reports/calls?{query}&shift=late").json()
    assert calls["by_cause"][0]["calls"] == 1 and calls["by_cause"][0]["cause"] == "cord"
    csv = client.get(f"/api/v1/reports/downtime/by_cause.csv?{query}")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines() == [
        "cause,stops,minutes,share_pct,cumulative_pct",
        "quality,1,38.0,66.7,66.7",
        "cord,2,19.0,33.3,100.0",
    ]
    assert client.get(f"/api/v1/reports/calls?{query}&shift=night").status_code == 422
    assert client.get("/api/v1/reports/nothing").status_code == 404
    page = client.get(f"/reports?{query}").text
    assert "<svg class=pareto" in page and "tooling" in page
    assert page.count('class="csv"') == sum(
        len(figures(config).report(name)) for name in reports.REPORTS
    )
    kiosk = TestClient(make_app(config, StandIn()))
    assert kiosk.get("/reports").status_code == 401
    assert kiosk.get(f"/reports?{query}&token={TOKEN}").status_code == 200
    assert kiosk.get(f"/api/v1/reports/downtime/by_cause.csv?{query}").status_code == 200  # cookie


# A second line's history, stored after the first's; k0 is posted when K2 is (by its bytes,
# "K2" comes first; by English rules "k0")
LINE_2 = (
    ("call", {**call("C-L2-000001", "S1", "cord", 300, ack=303, stopped=301, resolved=320),
              "line": "L2"}),
    ("stop", {**stop("D-L2-000001", "S1", "cord", "C-L2-000001", 301, 320), "line": "L2"}),
    ("order", {**ORDERS[1], "id": "k0", "line": "L2", "received": at(200)}),
)  # fmt: skip


@pytest.mark.parametrize("shift", ["", "&shift=early"])
def test_a_history_in_postgresql_gives_the_json_it_gives_in_sqlite(tmp_path, postgres_icu, shift):
    stores = [
        sqlite_plant(tmp_path / "sqlite", LINE_2),
        postgres_plant(tmp_path / "pg", postgres_icu, LINE_2),  # whatever its collation
    ]
    query = f"start=2026-03-02&end=2026-03-02{shift}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    found = []
    for config in stores:
        client = TestClient(make_app(config, StandIn()), headers=headers)
        found.append(
            {name: client.get(f"/api/v1/reports/{name}?{query}").json() for name in reports.REPORTS}
        )
    in_sqlite, in_postgres = found
    assert in_postgres == in_sqlite
    # and neither is empty: the calls, the stop with its reason code and the orders are there
    assert sum(r["calls"] for r in in_sqlite["calls"]["by_cause"]) == (4 if shift else 6)
    assert "tooling" in [r["reason"] for r in in_sqlite["downtime"]["by_reason"]]
    stations = [(r["line"], r["station"]) for r in in_sqlite["downtime"]["by_station"]]
    assert (("L2", "S1") in stations) is not bool(shift)  # L2 is in no plant's shift
    assert [o["order"] for o in in_sqlite["kanban"]["overdue_orders"]] == ["K2", "k0"]
