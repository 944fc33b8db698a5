"""The HTTP API's own rules: tokens, routes and filters, on a stand-in for the gateway and a
real SQLite store (tests/e2e/test_api.py runs it inside the real gateway process)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from andon.config import ConfigError, PlantConfig, hash_token, load_plant
from andon.runtime.api import make_app
from andon.runtime.store import SqliteStore, open_store

TOKEN = "dashboard-0123456789abcdef"
SUPERVISOR = "supervisor-0123456789abcdef"
VIEW = {"site": "P1", "lines": [{"id": "L1", "state": "called"}, {"id": "L2", "state": "running"}]}


def plant(
    tmp_path, lines: list[dict] | None = None, store: dict | None = None, **gateway
) -> PlantConfig:
    station = {"id": "S1", "name": "S1", "board": "B1", "profile": "esp32-devkitc"}
    return PlantConfig.model_validate(
        {
            "site": "P1",
            "gateway": {"database": str(tmp_path / "andon.db"), **gateway},
            "store": store or {},
            "lines": lines or [{"id": "L1", "name": "L1", "stations": [station]}],
            "api_tokens": [
                {"name": "dashboard", "hash": hash_token(TOKEN)},  # role viewer by default
                {"name": "boss", "role": "supervisor", "hash": hash_token(SUPERVISOR)},
            ],
        }
    )


class StandIn:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def view(self) -> dict:
        return VIEW

    def health(self) -> dict:
        return {"ok": not self.reasons, "reasons": self.reasons, "running": True}

    def watch(self, changed) -> None:
        pass  # this stand-in never changes

    def operate(self, op, by):
        raise AssertionError("no action may reach the gateway in these tests")


@pytest.fixture
def client(tmp_path) -> TestClient:
    config = plant(tmp_path)
    store = SqliteStore(config.gateway.database)
    with store.transaction() as tx:
        for n, resolved in enumerate((1000, None, 3000)):
            tx.record("call", f"c{n}", {"id": f"c{n}", "resolved": resolved})
        tx.record("order", "o1", {"id": "o1", "received": None})
    store.close()
    return TestClient(make_app(config, StandIn()))


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_every_route_but_health_needs_a_valid_token(client):
    assert client.get("/api/v1/health").json()["running"] is True
    routes = ("/plant", "/lines/L1", "/calls", "/orders", "/alerts", "/rejections")
    for route in (f"/api/v1{r}" for r in routes):
        missing = client.get(route)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.get(route, headers=auth("dashboard-0123456789abcdeX")).status_code == 401
        assert client.get(route, headers=auth()).status_code == 200


def test_the_plant_and_a_line_come_from_the_gateways_view(client):
    assert client.get("/api/v1/plant", headers=auth()).json() == VIEW
    assert client.get("/api/v1/lines/L2", headers=auth()).json() == {"id": "L2", "state": "running"}
    unknown = client.get("/api/v1/lines/L9", headers=auth())
    assert unknown.status_code == 404 and "no line 'L9'" in unknown.json()["detail"]


def test_calls_and_orders_filter_open_ones_and_keep_the_latest(client):
    calls = client.get("/api/v1/calls", headers=auth()).json()
    assert [c["id"] for c in calls] == ["c0", "c1", "c2"]
    assert [c["id"] for c in client.get("/api/v1/calls?open=true", headers=auth()).json()] == ["c1"]
    assert [c["id"] for c in client.get("/api/v1/calls?limit=2", headers=auth()).json()] == [
        "c1",
        "c2",
    ]
    assert client.get("/api/v1/calls?limit=0", headers=auth()).status_code == 422
    assert client.get("/api/v1/orders?open=true", headers=auth()).json() == [
        {"id": "o1", "received": None}
    ]


def test_the_openapi_schema_and_its_docs_are_served_without_a_cdn(client):
    schema = client.get("/api/v1/openapi.json")
    assert schema.status_code == 200 and "/api/v1/reports/{name}" in schema.json()["paths"]
    for page in ("/api/v1/docs", "/api/v1/redoc"):
        text = client.get(page).text
        assert "cdn" not in text.lower() and "/api/v1/docs-static/" in text
    assert client.get("/api/v1/docs-static/swagger-ui-bundle.js").status_code == 200


def test_a_viewer_token_sees_the_board_but_may_not_act(client):
    assert client.get("/board/L1", headers=auth()).status_code == 200
    assert client.get("/board/L9", headers=auth()).status_code == 404
    assert client.get("/console", headers=auth()).status_code == 403
    assert client.get("/console", headers=auth(SUPERVISOR)).status_code == 200
    refused = client.post("/api/v1/operator", json={"action": "resolve", "call": "c1"})
    assert refused.status_code == 401
    forbidden = client.post(
        "/api/v1/operator", json={"action": "resolve", "call": "c1"}, headers=auth()
    )
    assert forbidden.status_code == 403 and "viewer token 'dashboard'" in forbidden.text


def test_only_an_admin_may_resync_a_boards_numbering(client):
    route = "/api/v1/boards/B1/resync"
    assert client.post(route, headers=auth()).status_code == 403
    forbidden = client.post(route, headers=auth(SUPERVISOR))
    assert forbidden.status_code == 403 and "supervisor token 'boss'" in forbidden.text


def test_a_kiosk_url_token_becomes_a_cookie(client):
    page = client.get(f"/board/L1?token={TOKEN}")
    assert page.status_code == 200 and "andon_token" in page.headers["set-cookie"]
    assert "httponly" in page.headers["set-cookie"].lower()
    assert client.get("/api/v1/plant").json() == VIEW  # the cookie alone now suffices
    client.cookies.clear()
    assert client.get("/api/v1/plant").status_code == 401


def test_an_api_without_tokens_is_refused_when_the_plant_loads(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text(
        'site = "P1"\n[gateway.http]\nport = 8088\n[[lines]]\nid = "L1"\nname = "L1"\n'
        '[[lines.stations]]\nid = "S1"\nname = "S1"\nboard = "B1"\nprofile = "esp32-devkitc"\n'
    )
    with pytest.raises(ConfigError, match=r"gateway.http: the HTTP API needs at least one"):
        load_plant(path)


def test_health_answers_503_with_the_reasons_when_the_gateway_is_not_well(tmp_path):
    source = StandIn()
    client = TestClient(make_app(plant(tmp_path), source))
    assert client.get("/api/v1/health").status_code == 200
    source.reasons = ["the broker is unreachable"]
    sick = client.get("/api/v1/health")
    assert sick.status_code == 503
    assert sick.json()["reasons"] == ["the broker is unreachable"]


def test_alerts_lists_the_open_alerts_of_the_plant(tmp_path):
    source = StandIn()
    alert = {"id": "A-000001", "kind": "input_fault", "station": "S1"}
    source.view = lambda: {**VIEW, "alerts": [alert]}
    client = TestClient(make_app(plant(tmp_path), source))
    assert client.get("/api/v1/alerts", headers=auth()).json() == [alert]


def test_rejections_lists_recent_dead_letters_by_reason(tmp_path):
    config = plant(tmp_path)
    store = SqliteStore(config.gateway.database)
    with store.transaction() as tx:
        tx.dead_letter(1000, "andon/v1/P1/L1/S1/evt", b"x" * 5000, "size", "too big")
        tx.dead_letter(2000, "andon/v1/P1/L1/S1/evt", b"nope", "json", "not JSON")
        tx.dead_letter(3000, "andon/v1/P1/L1/S1/evt", b"{}", "json", "not JSON")
    store.close()
    client = TestClient(make_app(config, StandIn()))
    found = client.get("/api/v1/rejections?since=1500", headers=auth()).json()
    assert found["by_reason"] == {"json": {"count": 2, "last": 3000}}
    assert [r["received"] for r in found["recent"]] == [2000, 3000]
    every = client.get("/api/v1/rejections", headers=auth()).json()
    assert every["recent"][0]["size"] == 5000 and len(every["recent"][0]["sha256"]) == 64


# Calls and orders of three lines, begun out of their ids' order: (line, number, time). By id,
# SQLite ("C-L1-B-000001") and PostgreSQL ("L1-B/C-L1-B-000001") would not even agree on L1-B.
BEGUN = [("L2", 1, 1000), ("L1-B", 1, 2000), ("L1", 1, 3000), ("L2", 2, 3000), ("L1", 2, 5000)]
OLDEST_FIRST = ["L2-000001", "L1-B-000001", "L1-000001", "L2-000002", "L1-000002"]


def test_calls_and_orders_list_oldest_first_across_lines_the_same_in_either_store(
    tmp_path, postgres_icu
):
    lines = [
        {"id": ln, "name": ln, "stations": [{"id": "S1", "name": "S1", "board": f"B{ln}",
                                             "profile": "esp32-devkitc"}]}
        for ln in ("L1", "L2", "L1-B")
    ]  # fmt: skip
    listed = []
    for store in ({}, {"url": postgres_icu}):  # SQLite, then PostgreSQL
        config = plant(tmp_path, lines=lines, store=store)
        db = open_store(config)
        with db.transaction() as tx:
            for line, n, begun in BEGUN:
                call, order = f"C-{line}-{n:06d}", f"K-{line}-{n:06d}"
                tx.record("call", call, {"id": call, "line": line, "opened": begun})
                tx.record("order", order, {"id": order, "line": line, "posted": begun})
        db.close()
        client = TestClient(make_app(config, StandIn()))
        listed.append(
            [
                [r["id"] for r in client.get(f"/api/v1/{route}{query}", headers=auth()).json()]
                for route in ("calls", "orders")
                for query in ("", "?limit=2")
            ]
        )
    sqlite, postgresql = listed
    assert (
        sqlite
        == postgresql
        == [
            [f"C-{i}" for i in OLDEST_FIRST],
            [f"C-{i}" for i in OLDEST_FIRST[-2:]],  # the plant's latest two
            [f"K-{i}" for i in OLDEST_FIRST],
            [f"K-{i}" for i in OLDEST_FIRST[-2:]],
        ]
    )
