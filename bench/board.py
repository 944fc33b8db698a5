"""The browser board: event to DOM latency, a big plant's render, reports over a big log.

1. Latency. Real Mosquitto and the real `andon gateway` process (andon.sim.rig) with one line
   of N stations, a board page open in Debian's chromium (Playwright). Each event is published
   as its board would (a cord pulled, then reset, station after station); the baseline is the
   gateway's own latency, from the publish to its retained station state on the broker; the
   board's is from the publish to the tile's data-state change in the DOM, timed in the page by
   a MutationObserver (performance.timeOrigin + now: the machine's one wall clock). The events
   come from a client publishing for N boards, not N firmware VMs: two cores cannot run 32 VMs
   beside a browser, and what is measured here starts at the broker anyway (bench/e2e.py
   measures the pin edge to the broker).
2. Render. A 50 lines x 30 stations plant served by the HTTP server over a stand-in for the
   gateway: time from opening /board to every tile drawn; then 100 state changes/s for a few
   seconds, each a different tile, and each change's lag to the DOM (p50/p99): kept up if the
   last change shows within a second.
3. Reports. A database of N events (1M by default) as the log and the call, stop and order
   records they made, then every report over the whole year: seconds, wall and CPU (this
   machine is shared: the CPU time is what an idle machine's wall time would be).

    .venv/bin/python -m bench.board [--quick] [--boards 32] [--events 200] [--log 1000000]

Prints its figures and ends with one JSON line. Not run by `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import paho.mqtt.client as mqtt
from playwright.sync_api import Page, sync_playwright

from andon import contract
from andon.config import PlantConfig, hash_token
from andon.core import Plant
from andon.runtime import reports
from andon.runtime.api import ApiServer
from andon.runtime.store import SqliteStore
from andon.sim.mosquitto import free_port
from andon.sim.observe import wait_for
from andon.sim.rig import Rig

TOKEN = "bench-board-0123456789"
GOAL_P99_ABOVE_GATEWAY_MS = 250
GOAL_RENDER_S = 1.0
GOAL_REPORTS_S = 2.0
# Every data-state change of every tile, with its wall-clock time in ms.
RECORD_TILES = """
() => {
  window.changes = [];
  const record = (tile) => window.changes.push([tile.closest("[data-line]").dataset.line,
    tile.dataset.station, tile.dataset.state, performance.timeOrigin + performance.now()]);
  new MutationObserver((list) => {
    for (const m of list) if (m.target.classList.contains("tile")) record(m.target);
  })
    .observe(document.getElementById("lines"),
             {attributes: true, subtree: true, attributeFilter: ["data-state"]});
}
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)


def plant(lines: int, stations: int, http_port: int | None = None) -> dict:
    data = {
        "site": "B1",
        "gateway": {"client_id": "gw-bench-board", "http": {"port": http_port or 8088}},
        "escalation": {"tiers": [{"after_s": 86400, "to": "nobody"}]},
        "lines": [
            {
                "id": f"L{n}",
                "name": f"Line {n}",
                "stop": {"mode": "seconds", "seconds": 3600},  # no stop while measuring
                "shifts": [
                    {"name": name, "start": start, "end": end, "demand": 420}
                    for name, start, end in (
                        ("early", "06:00", "14:00"),
                        ("late", "14:00", "22:00"),
                        ("night", "22:00", "06:00"),
                    )
                ],
                "stations": [
                    {
                        "id": f"S{i:02d}",
                        "name": f"Station {i}",
                        "board": f"BB{n:03d}{i:07d}",
                        "profile": "esp32-devkitc",
                    }
                    for i in range(1, stations + 1)
                ],
            }
            for n in range(1, lines + 1)
        ],
        "api_tokens": [{"name": "bench", "hash": hash_token(TOKEN)}],
    }
    return data


def browser_page(playwright) -> tuple[object, Page]:
    browser = playwright.chromium.launch(
        executable_path=shutil.which("chromium"), args=["--no-sandbox"]
    )
    return browser, browser.new_page(viewport={"width": 1920, "height": 1080})


# --- 1. latency ---------------------------------------------------------------------------


def latency(boards: int, events: int, workdir: Path) -> dict:
    with Rig(plant(1, boards), workdir, stations=[]) as rig, sync_playwright() as playwright:
        site = rig.api_url.removesuffix("/api/v1")
        wait_for("the board served", lambda: _answers(f"{rig.api_url}/health"))
        browser, page = browser_page(playwright)
        try:
            page.goto(f"{site}/board/L1?token={TOKEN}")
            page.wait_for_selector('#link[data-state="live"]')
            page.evaluate(RECORD_TILES)
            return _publish_and_time(rig, page, boards, events)
        finally:
            browser.close()


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError):
        return False


def _publish_and_time(rig: Rig, page: Page, boards: int, events: int) -> dict:
    line = rig.plant.lines[0]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-boards")
    client.connect(rig.broker.host, rig.broker.port)
    client.loop_start()
    offset_s = time.time() - time.monotonic()  # the observer's monotonic times as wall time
    pulled: set[str] = set()
    gateway_ms, board_ms = [], []
    try:
        for n in range(events):
            station = line.stations[n % boards]
            kind = "cord_reset" if station.id in pulled else "cord_pulled"
            state = "running" if station.id in pulled else "called"
            pulled ^= {station.id}
            topic = contract.Station("B1", "L1", station.id).topic("state")
            published = time.time() * 1000
            body = {"board": station.board, "boot": 1, "seq": n + 1, "base": n + 1}
            body |= {"ts": int(published), "age": None, "kind": kind, "input": "cord"}
            client.publish(
                contract.Station("B1", "L1", station.id).topic("evt"), json.dumps(body), qos=1
            )
            seen = wait_for(
                f"{station.id} {state} on the broker",
                lambda t=topic, s=state, p=published: [
                    m
                    for m in rig.observer.seen(t, p / 1000 - offset_s)
                    if (m.body or {}).get("state") == s
                ],
            )
            gateway_ms.append((seen[0].at + offset_s) * 1000 - published)
            shown = page.wait_for_function(
                "([id, state, after]) => window.changes.find("
                "c => c[1] === id && c[2] === state && c[3] >= after)",
                arg=[station.id, state, published],
            ).json_value()
            board_ms.append(shown[3] - published)
    finally:
        client.loop_stop()
        client.disconnect()
    return {
        "boards": boards,
        "events": events,
        "gateway_p50_ms": pct(gateway_ms, 0.5),
        "gateway_p99_ms": pct(gateway_ms, 0.99),
        "board_p50_ms": pct(board_ms, 0.5),
        "board_p99_ms": pct(board_ms, 0.99),
        "board_p99_above_gateway_ms": round(pct(board_ms, 0.99) - pct(gateway_ms, 0.99), 1),
    }


# --- 2. a big plant ------------------------------------------------------------------------


class SyntheticGateway:
    """The view of a plant whose stations change on command, for the HTTP server alone."""

    def __init__(self, config: PlantConfig) -> None:
        self._view = Plant(config).view()
        self._view["now"] = 0
        self._lock = threading.Lock()
        self._watchers: list = []

    def view(self) -> dict:
        with self._lock:
            return json.loads(json.dumps(self._view))

    def watch(self, changed) -> None:
        self._watchers.append(changed)

    def operate(self, op, by):
        raise NotImplementedError("the bench does not act")

    def health(self) -> dict:
        return {"running": True}

    def toggle(self, n: int) -> tuple[str, str, str]:
        stations = [(ln, s) for ln in self._view["lines"] for s in ln["stations"]]
        line, station = stations[n % len(stations)]
        with self._lock:
            station["state"] = "called" if station["state"] == "running" else "running"
            self._view["now"] = n
        for changed in self._watchers:
            changed()
        return line["id"], station["id"], station["state"]


def big_plant(lines: int, stations: int, rate: int, seconds: float) -> dict:
    config = PlantConfig.model_validate(plant(lines, stations, free_port()))
    source = SyntheticGateway(config)
    server = ApiServer(config, source)
    server.start()
    try:
        with sync_playwright() as playwright:
            browser, page = browser_page(playwright)
            try:
                site = server.url.removesuffix("/api/v1")
                started = time.perf_counter()
                page.goto(f"{site}/board?token={TOKEN}")
                page.wait_for_function(
                    f"document.querySelectorAll('.tile').length === {lines * stations}"
                )
                render_s = time.perf_counter() - started
                page.evaluate(RECORD_TILES.replace('document.getElementById("lines")', "document"))
                lags = _changes(page, source, rate, seconds)
            finally:
                browser.close()
    finally:
        server.stop()
    return {
        "stations": lines * stations,
        "render_s": round(render_s, 3),
        "changes_per_s": rate,
        "change_lag_p50_ms": pct(lags, 0.5),
        "change_lag_p99_ms": pct(lags, 0.99),
        "kept_up": max(lags) < 1000,
    }


def _changes(page: Page, source: SyntheticGateway, rate: int, seconds: float) -> list[float]:
    """Toggle `rate` tiles a second; each change's lag to the DOM (ms)."""
    made = []
    start = time.monotonic()
    for n in range(int(rate * seconds)):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        before = time.time() * 1000
        line, station, state = source.toggle(n)
        made.append((line, station, state, before))
    last = made[-1]
    page.wait_for_function(
        "([line, id, state]) => window.changes.some("
        "c => c[0] === line && c[1] === id && c[2] === state)",
        arg=list(last[:3]),
        timeout=10_000,
    )
    shown = page.evaluate("window.changes")
    lags = []
    by_tile: dict[tuple[str, str, str], list[float]] = {}
    for line, station, state, at in shown:
        by_tile.setdefault((line, station, state), []).append(at)
    for line, station, state, at in made:
        later = [t for t in by_tile.get((line, station, state), []) if t >= at]
        lags.append(min(later) - at if later else float("inf"))
    return lags


# --- 3. reports over a big log -------------------------------------------------------------


def big_log(path: Path, events: int, http_port: int | None = None) -> PlantConfig:
    """`events` log entries over a year on 5 lines x 10 stations, as pull/ack/reset triples:
    a third of them calls, a fifth of those stopping their line (a stop record each); an order
    per 30 calls."""
    data = plant(5, 10)
    data["gateway"] = {"database": str(path), "http": {"port": http_port or 8088}}
    config = PlantConfig.model_validate(data)
    store = SqliteStore(path)
    rng = random.Random(1)
    year_start = int(time.mktime(date(2025, 1, 1).timetuple()) * 1000)
    span = 365 * 86_400_000
    calls = events // 3
    step = span // calls
    log_rows, records = [], []
    weights = [1 / rank for rank in range(1, 11)]  # a few stations call most: a Pareto
    for n in range(calls):
        line = f"L{rng.randint(1, 5)}"
        station = f"S{rng.choices(range(1, 11), weights)[0]:02d}"
        opened = year_start + n * step
        acked = opened + rng.randint(10_000, 300_000)
        resolved = acked + rng.randint(30_000, 1_800_000)
        stops = rng.random() < 0.2 and resolved > opened + 60_000
        stopped = opened + 60_000 if stops else None
        cause = rng.choices(("cord", "quality", "maintenance", "material"), (4, 3, 2, 1))[0]
        record = {"id": f"C-{n:07d}", "line": line, "station": station, "cause": cause}
        record |= {"opened": opened, "acknowledged": acked, "stopped": stopped}
        record |= {"resolved": resolved, "reason": ("tooling", "setup", None)[n % 3]}
        records.append(("call", record["id"], json.dumps(record)))
        if stopped is not None:  # the core books a stop to the call that stopped the line
            booked = {"id": f"D-{n:07d}", "line": line, "station": station, "cause": cause}
            booked |= {"call": record["id"], "started": stopped, "ended": resolved}
            records.append(("stop", booked["id"], json.dumps(booked)))
        for seq, (kind, at) in enumerate(
            (("cord_pulled", opened), ("ack", acked), ("cord_reset", resolved))
        ):
            log_rows.append(
                (at, line, station, f"BB{n % 10:010d}", 1, 3 * n + seq + 1, "evt", kind, at, "{}")
            )
        if n % 30 == 0:
            order = {"id": f"K-{n:07d}", "part": "P1", "line": line, "station": station}
            order |= {"posted": opened, "due": opened + 3_600_000, "overdue": n % 90 == 0}
            order |= {"received": opened + rng.randint(1_800_000, 7_200_000)}
            records.append(("order", order["id"], json.dumps(order)))
    store.db.execute("BEGIN")
    store.db.executemany(
        "INSERT INTO log (received, line, station, board, boot, seq, leaf, kind, at, message)"
        " VALUES (?,?,?,?,?,?,?,?,?,?)",
        log_rows,
    )
    store.db.executemany("INSERT INTO record (kind, id, data) VALUES (?,?,?)", records)
    store.db.execute("COMMIT")
    store.close()
    return config


def reports_time(events: int, workdir: Path) -> dict:
    started = time.perf_counter()
    config = big_log(workdir / "big.db", events)
    built_s = time.perf_counter() - started
    kanban = [{"part": "P1", "cards": {"lost": 0, "total": 4}, "recommended_cards": 3}]
    period = reports.period_of(config, date(2025, 1, 1), date(2025, 12, 31), None)
    now = period.end
    timings = {}
    for name in reports.REPORTS:  # as a route computes one report
        started, cpu = time.perf_counter(), time.process_time()
        reports.Figures(config, period, kanban, now).report(name)
        timings[name] = (time.perf_counter() - started, time.process_time() - cpu)
    started, cpu = time.perf_counter(), time.process_time()
    found = reports.Figures(config, period, kanban, now)
    tables = {name: found.report(name) for name in reports.REPORTS}  # as /reports does
    page_s, page_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    calls = sum(r["calls"] for r in tables["calls"]["by_cause"])
    shift = reports.period_of(config, date(2025, 1, 1), date(2025, 12, 31), "night")
    started = time.perf_counter()
    reports.Figures(config, shift, kanban, now).report("availability")
    shift_s = time.perf_counter() - started
    return {
        "log_events": events,
        "calls": calls,
        "stops": len(found.stops),
        "build_s": round(built_s, 1),
        "report_s": {name: round(wall, 2) for name, (wall, _) in timings.items()},
        # CPU seconds: what the wall time would be on an idle machine
        "report_cpu_s": {name: round(cpu, 2) for name, (_, cpu) in timings.items()},
        "page_s": round(page_s, 2),
        "page_cpu_s": round(page_cpu_s, 2),
        "one_shift_availability_s": round(shift_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, a smaller log")
    parser.add_argument("--boards", type=int, default=32)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--log", type=int, default=1_000_000, help="log events for the reports")
    args = parser.parse_args()
    if args.quick:
        args.events, args.log = min(args.events, 40), min(args.log, 100_000)
    with tempfile.TemporaryDirectory(prefix="andon-bench-board-") as tmp:
        summary = {"bench": "board"}
        summary["latency"] = latency(args.boards, args.events, Path(tmp) / "rig")
        print("latency:", summary["latency"], flush=True)
        summary["render"] = big_plant(50, 30, rate=100, seconds=3 if args.quick else 5)
        print("render:", summary["render"], flush=True)
        summary["reports"] = reports_time(args.log, Path(tmp))
        print("reports:", summary["reports"], flush=True)
    summary["load_average"] = round(os.getloadavg()[0], 2)  # a shared machine: say how busy
    summary["goals_met"] = {
        "latency": summary["latency"]["board_p99_above_gateway_ms"] <= GOAL_P99_ABOVE_GATEWAY_MS,
        "render": summary["render"]["render_s"] <= GOAL_RENDER_S and summary["render"]["kept_up"],
        "reports": max(summary["reports"]["report_cpu_s"].values()) <= GOAL_REPORTS_S,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
