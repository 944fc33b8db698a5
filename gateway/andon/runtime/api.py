"""The gateway's HTTP API: an adapter for dashboards and MES/ERP systems, where MQTT is not
their language. Each request reads the running gateway's state (its `view()`) or the store's
records on a connection of its own; the live board, the console and the reports
(andon.runtime.web, andon.runtime.reports) are served from the same app.

Every route but `/api/v1/health` and the API's docs needs a token of the plant's
`[[api_tokens]]` (kept there as hashes): `Authorization: Bearer <token>`, or the kiosk cookie
a board page sets. Only the console's actions change the plant, and they need a supervisor
token. Served by uvicorn on a thread of the gateway process (`[gateway.http]`).
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Protocol

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from andon import __version__
from andon.config import PlantConfig
from andon.runtime import web
from andon.runtime.auth import requires
from andon.runtime.metrics import metrics_app
from andon.runtime.store import plant_records, plant_rejections

PREFIX = "/api/v1"
Limit = Annotated[int, Query(ge=1, le=10_000)]
OpenOnly = Annotated[bool, Query(alias="open")]


class Source(web.LiveSource, Protocol):
    """What the API reads: the running gateway (andon.runtime.service.Gateway)."""

    def health(self) -> dict: ...


def make_app(config: PlantConfig, source: Source) -> FastAPI:
    app = FastAPIOffline(  # Swagger UI and ReDoc from the package's files: no CDN
        title="andon gateway",
        version=__version__,
        docs_url=f"{PREFIX}/docs",
        redoc_url=f"{PREFIX}/redoc",
        openapi_url=f"{PREFIX}/openapi.json",
        static_url=f"{PREFIX}/docs-static",
    )
    authorized = [Depends(requires(config, "viewer"))]
    web.install(app, config, source, PREFIX)

    @app.get(f"{PREFIX}/health")
    def health() -> JSONResponse:
        """200 when the gateway works; 503 with its `reasons` when the broker is unreachable,
        the worker stalls or has stopped (a failing store stops it). No token: for monitoring."""
        report = source.health()
        return JSONResponse(report, status_code=200 if report["ok"] else 503)

    @app.get(f"{PREFIX}/alerts", dependencies=authorized)
    def alerts() -> list[dict]:
        """The open alerts, as the plant holds them."""
        return source.view().get("alerts", [])

    @app.get(f"{PREFIX}/rejections", dependencies=authorized)
    def recent_rejections(since: Annotated[int, Query(ge=0)] = 0, limit: Limit = 100) -> dict:
        """Rejected messages since `since` (ms since the epoch): counts by reason, and the last
        `limit` of them (topic, reason, detail, size and sha256 of the payload)."""
        return plant_rejections(config, since, limit)

    @app.get(f"{PREFIX}/plant", dependencies=authorized)
    def plant() -> dict:
        """Every line and station, open calls, kanban loops: the plant now."""
        return source.view()

    @app.get(f"{PREFIX}/lines/{{line_id}}", dependencies=authorized)
    def line(line_id: str) -> dict:
        for each in source.view()["lines"]:
            if each["id"] == line_id:
                return each
        raise HTTPException(404, f"no line {line_id!r} in the plant")

    @app.get(f"{PREFIX}/calls", dependencies=authorized)
    def calls(open_only: OpenOnly = False, limit: Limit = 100) -> list[dict]:
        """Call records, oldest first: the last `limit`; `open=true`: not resolved yet."""
        return plant_records(config, "call", limit, open_only)

    @app.get(f"{PREFIX}/orders", dependencies=authorized)
    def orders(open_only: OpenOnly = False, limit: Limit = 100) -> list[dict]:
        """Replenishment orders, oldest first: the last `limit`; `open=true`: not received."""
        return plant_records(config, "order", limit, open_only)

    app.mount("/metrics", metrics_app(source))  # Prometheus, no token: like health
    return app


class ApiServer:
    """The API on a thread of its own: `start()`, then `stop()`."""

    def __init__(self, config: PlantConfig, source: Source) -> None:
        http = config.gateway.http
        if http is None:
            raise ValueError("the plant configures no [gateway.http]")
        settings = uvicorn.Config(
            make_app(config, source), host=http.host, port=http.port, log_level="warning"
        )
        self.server = uvicorn.Server(settings)
        self.url = f"http://{http.host}:{http.port}{PREFIX}"
        self._thread = threading.Thread(target=self.server.run, name="andon-api", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Serve; RuntimeError if it does not listen within `timeout` (a port in use)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"the HTTP API could not listen on {self.url}")

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
