"""The gateway's HTTP API: a thin, read-only adapter for dashboards and MES/ERP systems that
poll, where MQTT is not their language. Each request reads the running gateway's state (its
`view()`) or the store's records on a connection of its own; nothing here changes the plant.

Every route but `/api/v1/health` needs `Authorization: Bearer <token>`, a token of the plant's
`[[api_tokens]]`. Served by uvicorn on a thread of the gateway process (`[gateway.http]`).
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Protocol

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from andon import __version__
from andon.config import PlantConfig
from andon.runtime.metrics import metrics_app
from andon.runtime.store import records, rejections

PREFIX = "/api/v1"
BEARER = HTTPBearer(auto_error=False)
Limit = Annotated[int, Query(ge=1, le=10_000)]
OpenOnly = Annotated[bool, Query(alias="open")]


class Source(Protocol):
    """What the API reads: the running gateway (andon.runtime.service.Gateway)."""

    def view(self) -> dict: ...
    def health(self) -> dict: ...


def make_app(config: PlantConfig, source: Source) -> FastAPI:
    app = FastAPI(title="andon gateway", version=__version__, docs_url=f"{PREFIX}/docs")

    def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]):
        if credentials is None or config.token_name(credentials.credentials) is None:
            raise HTTPException(
                401, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    authorized = [Depends(caller)]

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
        return rejections(config.gateway.database, since, limit)

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

    def latest(kind: str, closed_by: str, open_only: bool, limit: int) -> list[dict]:
        """The last `limit` records of `kind`, oldest first; with `open_only`, those whose
        `closed_by` is still unset."""
        found = records(config.gateway.database, kind)
        return [r for r in found if not open_only or r[closed_by] is None][-limit:]

    @app.get(f"{PREFIX}/calls", dependencies=authorized)
    def calls(open_only: OpenOnly = False, limit: Limit = 100) -> list[dict]:
        """Call records, oldest first: the last `limit`; `open=true`: not resolved yet."""
        return latest("call", "resolved", open_only, limit)

    @app.get(f"{PREFIX}/orders", dependencies=authorized)
    def orders(open_only: OpenOnly = False, limit: Limit = 100) -> list[dict]:
        """Replenishment orders, oldest first: the last `limit`; `open=true`: not received."""
        return latest("order", "received", open_only, limit)

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
