"""The HTTP API inside the real gateway process, on the e2e rig: what a dashboard or an MES
polling it sees while a cord is pulled and reset at a virtual board."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from andon.sim.observe import wait_for
from andon.sim.rig import Rig

TOKEN = "e2e-dashboard-0123456789"  # tests/e2e/plant.toml


def get(rig: Rig, path: str, token: str = TOKEN) -> Any:
    request = urllib.request.Request(
        f"{rig.api_url}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def api_up(rig: Rig) -> dict | None:
    try:
        return get(rig, "/health")
    except urllib.error.URLError:
        return None


def test_the_http_api_serves_the_running_gateways_state(rig: Rig):
    health = wait_for("the API listening", lambda: api_up(rig))
    assert health["running"] is True and health["broker_connected"] is True

    rig.line.do("pull", "L1", "S03")
    # called, or stopped already if the machine is slow (the fixed position is 2 s away)
    line = wait_for(
        "S03 called", lambda: "S03" in (v := get(rig, "/lines/L1"))["called"] + v["stopped"] and v
    )
    assert next(s for s in line["stations"] if s["id"] == "S03")["call"] == "cord"
    [call] = get(rig, "/calls?open=true")
    assert (call["line"], call["station"], call["cause"]) == ("L1", "S03", "cord")

    rig.line.do("reset", "L1", "S03")
    wait_for("no open call", lambda: get(rig, "/calls?open=true") == [])
    [resolved] = get(rig, "/calls")
    assert resolved["resolved"] is not None and resolved["resolution"] == "cord_reset"
    assert get(rig, "/plant")["lines"][0]["state"] == "running"

    with pytest.raises(urllib.error.HTTPError) as refused:
        get(rig, "/plant", token="not-the-token-0000000")
    assert refused.value.code == 401
