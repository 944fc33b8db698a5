"""The andon in the browser: the live board (`/board`, `/board/{line}`), the supervisor console
(`/console`) and the reports (`/reports`), served by the gateway's HTTP server from assets in
the package (`andon/runtime/web/`): no CDN, no build step, plant networks are offline.

Live: the board opens one Server-Sent Events stream (`/api/v1/stream`). The gateway's worker
calls `Changes.notify` after each commit that changed the plant; every open stream then sends
the new view, at most one per PUSH_EVERY_S (a burst is coalesced, a lone change goes out at
once). A heartbeat every HEARTBEAT_S lets the page say "stale" when it hears nothing; the
browser's EventSource reconnects by itself after a gateway restart.

Who may do what: andon.runtime.auth (viewer: the board and reports; supervisor: the console).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError

from andon import contract
from andon.config import ApiToken, PlantConfig
from andon.runtime import reports
from andon.runtime.auth import remember_token, requires

ASSETS = Path(__file__).with_name("web")
HEARTBEAT_S = 2.0
PUSH_EVERY_S = 0.1  # at most ten views a second per page: a burst is coalesced
OPERATE_TIMEOUT_S = 10.0


class LiveSource(Protocol):
    """What the board reads and the console drives: the running gateway."""

    def view(self) -> dict: ...
    def watch(self, changed: Callable[[], None]) -> None: ...
    def operate(self, op: contract.Operator, by: str) -> Future: ...


class Changes:
    """Wakes every open stream when the gateway commits a change. `notify` runs on the
    gateway's worker: it only hands the wake-up to each stream's event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.version = 0  # changes so far: pages showing the same board share one view

    def notify(self) -> None:
        with self._lock:
            self.version += 1
            streams = list(self._streams)
        for loop, event in streams:
            loop.call_soon_threadsafe(event.set)

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        stream = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._streams.add(stream)
        return stream

    def unsubscribe(self, stream: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._streams.discard(stream)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def line_view(view: dict, line_id: str) -> dict:
    """What a one-line board needs of the plant's view: that line, and the calls, orders and
    alerts there."""
    here = [ln for ln in view["lines"] if ln["id"] == line_id]
    return {
        **view,
        "lines": here,
        "calls": [c for c in view["calls"] if c["line"] == line_id],
        "orders": [o for o in view["orders"] if o["line"] == line_id],
        "alerts": [a for a in view.get("alerts", []) if a.get("line") in (line_id, None)],
    }


class Action(BaseModel):
    """A console action (the operator is the caller's token)."""

    action: Literal["acknowledge", "resolve", "annotate", "card_lost", "card_found"]
    call: str | None = None
    card: str | None = None
    reason: str | None = Field(None, max_length=64)  # a code of the plant's reason_codes
    comment: str | None = Field(None, max_length=500)


def install(app: FastAPI, config: PlantConfig, source: LiveSource, prefix: str) -> None:
    """Add the board, console, reports and their API routes to the HTTP API's app."""
    changes = Changes()
    source.watch(changes.notify)
    app.mount("/static", StaticFiles(directory=ASSETS), name="andon-static")
    app.include_router(_pages(config))
    app.include_router(_live(config, source, changes), prefix=prefix)
    kanban = lambda: source.view()["kanban"]  # noqa: E731
    app.include_router(reports.router(config, requires(config, "viewer"), kanban, prefix, wall_ms))


def _page(name: str, request: Request) -> HTMLResponse:
    """An HTML page of the assets."""
    return remember_token(HTMLResponse((ASSETS / name).read_text(encoding="utf-8")), request)


def _pages(config: PlantConfig) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    viewer = [Depends(requires(config, "viewer"))]

    @router.get("/board", dependencies=viewer)
    def plant_board(request: Request) -> HTMLResponse:
        return _page("board.html", request)

    @router.get("/board/{line_id}", dependencies=viewer)
    def board(line_id: str, request: Request) -> HTMLResponse:
        if config.line(line_id) is None:
            raise HTTPException(404, f"no line {line_id!r} in the plant")
        return _page("board.html", request)

    @router.get("/console", dependencies=[Depends(requires(config, "supervisor"))])
    def console(request: Request) -> HTMLResponse:
        return _page("console.html", request)

    return router


def _event(kind: str, data: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _live(config: PlantConfig, source: LiveSource, changes: Changes) -> APIRouter:
    router = APIRouter()
    viewer = Depends(requires(config, "viewer"))
    supervisor = Depends(requires(config, "supervisor"))
    admin = Depends(requires(config, "admin"))

    # The last view sent per board (a line, or the plant: None) as JSON, and the version it
    # shows: ten TVs on one line cost one view per change, not ten.
    latest: dict[str | None, tuple[int, str]] = {}

    def snapshot(line_id: str | None) -> bytes:
        version = changes.version  # read first: a change while we read sends again
        if line_id not in latest or latest[line_id][0] != version:
            view = source.view()
            view = line_view(view, line_id) if line_id else view
            latest[line_id] = (version, json.dumps(view, separators=(",", ":")))
        body = latest[line_id][1]
        # the time it is served, for the page's clock, spliced in front of the shared view
        return f'event: view\ndata: {{"served":{wall_ms()},{body[1:]}\n\n'.encode()

    async def stream(line_id: str | None, request: Request) -> AsyncIterator[bytes]:
        subscription = changes.subscribe()
        _, changed = subscription
        try:
            yield b"retry: 1000\n\n"  # reconnect after a second when the gateway went away
            last_push = 0.0
            while not await request.is_disconnected():
                changed.clear()
                yield snapshot(line_id)
                last_push = time.monotonic()
                while not changed.is_set():
                    try:
                        await asyncio.wait_for(changed.wait(), HEARTBEAT_S)
                    except TimeoutError:
                        yield _event("beat", {"served": wall_ms()})
                        if await request.is_disconnected():
                            return
                await asyncio.sleep(max(0.0, last_push + PUSH_EVERY_S - time.monotonic()))
        finally:
            changes.unsubscribe(subscription)

    @router.get("/stream", dependencies=[viewer])
    async def live(
        request: Request, line: Annotated[str | None, Query()] = None
    ) -> StreamingResponse:
        """Server-Sent Events: `view` (the plant, or `line`'s part of it) at once and after
        every change, `beat` every few seconds in between."""
        if line is not None and config.line(line) is None:
            raise HTTPException(404, f"no line {line!r} in the plant")
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            stream(line, request), media_type="text/event-stream", headers=headers
        )

    @router.get("/console/setup", dependencies=[supervisor])
    def setup() -> dict:
        """What the console offers: the plant's reason codes and kanban cards."""
        return {
            "reasons": [{"code": c, "label": label} for c, label in config.reason_codes.items()],
            "cards": [{"uid": uid, "part": k.part} for k in config.kanban for uid in k.cards],
        }

    async def submit(fields: dict, caller: ApiToken) -> dict:
        """An operator record (who, when, what), logged and applied by the gateway's worker;
        422 when malformed, 409 with the reason when the plant refuses it."""
        try:
            op = contract.Operator(by=caller.name, **fields)
        except ValidationError as exc:
            detail = exc.errors(include_url=False, include_input=False, include_context=False)
            raise HTTPException(422, detail) from None
        future = source.operate(op, caller.name)
        try:
            refusal = await asyncio.wait_for(asyncio.wrap_future(future), OPERATE_TIMEOUT_S)
        except TimeoutError:
            raise HTTPException(503, "the gateway did not answer in time") from None
        if refusal is not None:
            raise HTTPException(409, refusal)
        return {"done": op.action, "by": caller.name}

    @router.post("/operator")
    async def operate(action: Action, caller: ApiToken = supervisor) -> dict:
        """A supervisor's console action (acknowledge, resolve, annotate, card lost/found)."""
        return await submit(action.model_dump(), caller)

    @router.post("/boards/{board}/resync")
    async def resync(board: str, caller: ApiToken = admin) -> dict:
        """Take the board's event numbering afresh from its next event (admin): for a board
        whose events are rejected as `seq_jump` because the database is older than the board,
        such as one restored from a backup. Its next event counts everything below its `base`
        as done. Logged as an operator record."""
        return await submit({"action": "resync", "board": board}, caller)

    return router
