"""The live stream on the real HTTP server (uvicorn), over a stand-in gateway: a view at once,
another after each change the gateway reports, heartbeats in between, and one view per change
however many pages show the same board."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from andon.config import PlantConfig, hash_token
from andon.runtime.api import ApiServer
from andon.sim.mosquitto import free_port
from andon.sim.observe import wait_for

TOKEN = "stream-viewer-0123456789"


class StandIn:
    """A gateway whose line L1 changes when the test says."""

    def __init__(self) -> None:
        self.state = "running"
        self.views = 0  # how often the HTTP server asked for the plant's view
        self._watchers: list = []
        self._lock = threading.Lock()

    def view(self) -> dict:
        with self._lock:
            self.views += 1
        line = {"id": "L1", "state": self.state, "stations": []}
        return {"site": "P1", "lines": [line], "calls": [], "orders": [], "alerts": []}

    def watch(self, changed) -> None:
        self._watchers.append(changed)

    def change(self, state: str) -> None:
        self.state = state
        for changed in self._watchers:
            changed()

    def operate(self, op, by):
        raise AssertionError("the stream never acts")

    def health(self) -> dict:
        return {"running": True}


@pytest.fixture
def served() -> Iterator[tuple[ApiServer, StandIn]]:
    station = {"id": "S1", "name": "S1", "board": "B1", "profile": "esp32-devkitc"}
    config = PlantConfig.model_validate(
        {
            "site": "P1",
            "gateway": {"http": {"port": free_port()}},
            "lines": [{"id": "L1", "name": "L1", "stations": [station]}],
            "api_tokens": [{"name": "tv", "hash": hash_token(TOKEN)}],
        }
    )
    source = StandIn()
    server = ApiServer(config, source)
    server.start()
    try:
        yield server, source
    finally:
        server.stop()


class Stream:
    """One page's EventSource: the events it has received, read on a thread of its own."""

    def __init__(self, server: ApiServer, path: str = "/api/v1/stream?line=L1") -> None:
        where = server.server.config
        self.connection = http.client.HTTPConnection(where.host, where.port, timeout=10)
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        self.response = self.connection.getresponse()
        self.events: list[tuple[str, dict]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        kind = None
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line[6:])))
        except OSError:
            return  # shut down by the test

    def views(self) -> list[dict]:
        return [data for kind, data in self.events if kind == "view"]

    def close(self) -> None:
        """End the stream (the reader sees its end), then the connection."""
        self.connection.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self.connection.close()


def test_a_change_is_pushed_and_pages_of_one_board_share_its_view(served):
    server, source = served
    first, second = Stream(server), Stream(server)
    try:
        assert first.response.getheader("content-type").startswith("text/event-stream")
        wait_for("both pages' first view", lambda: first.views() and second.views())
        assert first.views()[0]["lines"][0]["state"] == "running"
        assert first.views()[0]["served"] > 0

        asked = source.views
        source.change("stopped")
        for page in (first, second):
            wait_for("the stop pushed", lambda p=page: len(p.views()) == 2)
            assert page.views()[1]["lines"][0]["state"] == "stopped"
        assert source.views == asked + 1  # one view for both pages

        wait_for("a heartbeat", lambda: any(kind == "beat" for kind, _ in first.events))
    finally:
        first.close()
        second.close()


def test_a_stream_needs_a_token_and_a_known_line(served):
    server, _ = served
    where = server.server.config
    for path, headers, status in (
        ("/api/v1/stream", {}, 401),
        ("/api/v1/stream?line=L9", {"Authorization": f"Bearer {TOKEN}"}, 404),
    ):
        connection = http.client.HTTPConnection(where.host, where.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            assert connection.getresponse().status == status
        finally:
            connection.close()
