"""The reports plants run on: calls, downtime, stops per shift, OEE availability, kanban.

Computed from the stored call, stop, annotation and order records (the `record` table, which
the gateway writes from the log as it applies it, so a replay writes the same) and, for the
kanban loops' card counts, the plant's view: never from counters that drift. Calls are read
from `call_fact`, the same records as plain indexed columns (kept by the store), and grouped
in SQL, so a log of a million events answers in about two seconds (bench/board.py).
They are read on a read-only connection to the plant's store (`store.Reader`): the SQLite file,
or the PostgreSQL several gateways share, so that any of them serves the whole plant.

Filters: a date range (`start`, `end`, both days included, in the plant's timezone) and
optionally one shift's name. A call counts when it was opened in the range (and shift); a
stop's time counts where it overlaps the range (and the shift's windows).

Definitions (the fixture test in tests/web/test_reports.py works them by hand):
- time to acknowledge: acknowledged - opened; MTTR: resolved - opened (repaired calls only);
  p90: the nearest-rank 90th percentile (the ceil(0.9 n)-th smallest).
- a stop: as the core books it (a stop record): from the line's stop to its restart, booked to
  the station that stopped it first, its cause (a call's, or "offline") and the reason code
  given to that call in the console.
- availability per line and shift occurrence = (planned - stopped) / planned, planned being the
  occurrence's working time from the calendar (breaks excluded; so far, for a shift still
  running), stopped the stop time in that working time.
"""

from __future__ import annotations

import csv
import html
import io
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from andon.config import PlantConfig
from andon.core.calendar import ShiftWindow, windows_between
from andon.runtime.auth import remember_token
from andon.runtime.store import Reader, read_plant

REPORTS = ("calls", "downtime", "stops", "availability", "kanban")
ASSETS = Path(__file__).with_name("web")


@dataclass(frozen=True)
class Period:
    """[start, end) in ms, and the shift filter (None: every shift and off-shift time)."""

    start: int
    end: int
    shift: str | None = None


def period_of(config: PlantConfig, start: date, end: date, shift: str | None) -> Period:
    """Whole days in the plant's timezone, `end` included."""
    zone = config.zone
    first = datetime.combine(start, datetime.min.time(), tzinfo=zone)
    after = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return Period(int(first.timestamp() * 1000), int(after.timestamp() * 1000), shift)


def shift_windows(config: PlantConfig, line_id: str, period: Period) -> list[ShiftWindow]:
    """Every occurrence of the line's shifts (of `period.shift`, if set) overlapping the
    period, in time order, as the core's calendar has them (weekdays, holidays, breaks)."""
    found = windows_between(config.line(line_id), config.zone, period.start, period.end)
    return [w for w in found if period.shift in (None, w.name)]


class Calendar:
    """One line's shift windows in a period, in time order, looked up by bisection (windows of
    one line never overlap)."""

    def __init__(self, windows: list[ShiftWindow]) -> None:
        self.windows = windows
        self._starts = [w.start for w in windows]

    def overlapping(self, start: int, end: int) -> list[ShiftWindow]:
        first = max(0, bisect_right(self._starts, start) - 1)
        last = bisect_right(self._starts, end - 1)
        return [w for w in self.windows[first:last] if w.end > start]


def p90(values: list[int]) -> int | None:
    """Nearest rank: the ceil(0.9 n)-th smallest value."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def mean(values: list[int]) -> int | None:
    return sum(values) // len(values) if values else None


# --- reading the records ------------------------------------------------------------------

ORDER_COLUMNS = ("id", "part", "line", "station", "posted", "due", "received", "overdue")


# Per cause and station, the calls opened in [start, end) (and the shift): their count, and
# their times to acknowledge and to resolve as comma-separated lists (the aggregate leaves out
# NULLs). The database scans and groups once; Python merges the groups and splits the strings.
CALL_GROUPS = """
SELECT cause, line, station, count(*), {acks}, {repairs}
FROM call_fact WHERE opened >= ? AND opened < ? {shift} GROUP BY cause, line, station
"""


def call_tables(
    db: Reader, period: Period, calendars: dict[str, Calendar]
) -> dict[str, list[dict]]:
    """Calls opened in the period (and shift), per cause and per station: how many, how many
    acknowledged and resolved, mean and p90 time to acknowledge, mean time to resolve."""
    shift, shift_args = "", []
    if period.shift:  # a line no longer in the plant has no shifts
        spans = {line: [(w.start, w.end) for w in c.windows] for line, c in calendars.items()}
        condition, shift_args = db.within("line", "opened", spans)
        shift = f"AND {condition}"
    sql = CALL_GROUPS.format(
        acks=db.joined("acknowledged - opened"), repairs=db.joined("resolved - opened"), shift=shift
    )
    rows = db.execute(sql, (period.start, period.end, *shift_args)).fetchall()
    tables = {}
    for name, columns in (("by_cause", ("cause",)), ("by_station", ("line", "station"))):
        merged: dict[tuple, list] = {}
        for cause, line, station, calls, acks, repairs in rows:
            fields = {"cause": cause, "line": line, "station": station}
            key = tuple(fields[c] for c in columns)
            group = merged.setdefault(key, [0, [], []])
            group[0] += calls
            group[1] += [acks] if acks else []
            group[2] += [repairs] if repairs else []
        ordered = sorted(merged.items(), key=lambda g: (-g[1][0], g[0]))
        tables[name] = [
            _call_stats(dict(zip(columns, key, strict=True)), calls, ",".join(a), ",".join(r))
            for key, (calls, a, r) in ordered
        ]
    return tables


def _call_stats(key: dict, calls: int, acks: str | None, repairs: str | None) -> dict:
    ack_ms = list(map(int, acks.split(","))) if acks else []
    repair_ms = list(map(int, repairs.split(","))) if repairs else []
    return {
        **key,
        "calls": calls,
        "acknowledged": len(ack_ms),
        "ack_mean_s": _s(mean(ack_ms)),
        "ack_p90_s": _s(p90(ack_ms)),
        "resolved": len(repair_ms),
        "mttr_s": _s(mean(repair_ms)),
    }


# The line stops the core booked (stop records: the station that stopped the line first, its
# cause, its call), with the reason code given to that call in the console, if any.
STOPS = """
WITH stop AS (
    SELECT {line} AS line, {station} AS station, {cause} AS cause, {call} AS call,
           {started} AS start, coalesce({ended}, ?) AS "end"
    FROM {stops} AS record
)
SELECT stop.*, coalesce({reason}, fact.reason, '-') AS reason
FROM stop
LEFT JOIN record note ON note.kind = 'annotation' AND note.id = {call_id}
LEFT JOIN call_fact fact ON fact.id = {call_id}
WHERE stop.start < ? AND stop."end" > ?
ORDER BY stop.start, {stop_line}
"""
STOP_COLUMNS = ("line", "station", "cause", "call", "start", "end", "reason")
JSON_INTEGERS = ("started", "ended", "posted", "due", "received")  # ms times in the records


def _member(db: Reader, column: str, name: str) -> str:
    """The SQL of a record's member, typed as the records hold it."""
    kind = "int" if name in JSON_INTEGERS else "bool" if name == "overdue" else "text"
    return db.field(column, name, kind)


def read_stops(db: Reader, period: Period, now: int) -> list[dict]:
    """The stops overlapping the period; one still going ends now."""
    members = ("line", "station", "cause", "call", "started", "ended")
    sql = STOPS.format(
        **{name: _member(db, "data", name) for name in members},
        reason=_member(db, "note.data", "reason"),
        call_id=db.record_id("stop.line", "stop.call"),
        stops=db.record_table("stop"),
        stop_line=db.bytewise("stop.line"),
    )
    rows = db.execute(sql, (now, period.end, period.start))
    return [dict(zip(STOP_COLUMNS, row, strict=True)) for row in rows]


def read_orders(db: Reader, period: Period) -> list[dict]:
    fields = ", ".join(_member(db, "data", c) for c in ORDER_COLUMNS)
    posted = _member(db, "data", "posted")
    rows = db.execute(
        f"SELECT {fields} FROM {db.record_table('order')} AS record"
        f" WHERE {posted} >= ? AND {posted} < ?"
        f" ORDER BY {posted}, {db.bytewise(_member(db, 'data', 'id'))}",  # as posted
        (period.start, period.end),
    )
    return [dict(zip(ORDER_COLUMNS, row, strict=True)) for row in rows]


# --- the figures ---------------------------------------------------------------------------


class Figures:
    """Every report over one period. Each reads what it needs from the plant's store (on a
    read-only connection of its own) when first asked: one report reads only its records."""

    def __init__(self, config: PlantConfig, period: Period, kanban: list[dict], now: int) -> None:
        self.config, self.period, self.now = config, period, now
        self.kanban = kanban
        self.calendars = {
            ln.id: Calendar(shift_windows(config, ln.id, period)) for ln in config.lines
        }

    def _read(self, reader: Callable[[Reader], Any], nothing: Any) -> Any:
        """What `reader` finds; `nothing` before any gateway has stored anything."""
        return read_plant(self.config, reader, nothing)

    @cached_property
    def stops(self) -> list[dict]:
        """The stops in the period (and the shift's working time), each with its ms there."""
        found = self._read(lambda db: read_stops(db, self.period, self.now), [])
        for stop in found:
            stop["ms"] = self._overlap(stop)
        return [s for s in found if s["ms"] > 0]

    @cached_property
    def orders(self) -> list[dict]:
        return self._read(lambda db: read_orders(db, self.period), [])

    def calls_report(self) -> dict[str, list[dict]]:
        nothing = {"by_cause": [], "by_station": []}
        return self._read(lambda db: call_tables(db, self.period, self.calendars), nothing)

    def _overlap(self, stop: dict, window: ShiftWindow | None = None) -> int:
        """The stop's ms inside the period; with a window (or the shift filter's windows),
        its working time there: a stop through a break loses no planned time in the break."""
        start, end = max(stop["start"], self.period.start), min(stop["end"], self.period.end)
        if window is not None:
            return max(0, window.worked(end) - window.worked(start))
        if self.period.shift is None:
            return max(0, end - start)
        calendar = self.calendars.get(stop["line"])  # None: a line no longer in the plant
        windows = calendar.overlapping(start, end) if calendar else []
        return sum(self._overlap(stop, w) for w in windows)

    def downtime_report(self) -> dict[str, list[dict]]:
        return {
            "by_station": self._pareto(lambda s: {"line": s["line"], "station": s["station"]}),
            "by_cause": self._pareto(lambda s: {"cause": s["cause"]}),
            "by_reason": self._pareto(lambda s: {"reason": s["reason"]}),
        }

    def _pareto(self, key: Callable[[dict], dict]) -> list[dict]:
        """Downtime per key, largest first, with the cumulative share."""
        totals: dict[tuple, int] = defaultdict(int)
        counts: dict[tuple, int] = defaultdict(int)
        for s in self.stops:
            group = tuple(key(s).items())
            totals[group] += s["ms"]
            counts[group] += 1
        whole = sum(totals.values()) or 1
        table, running = [], 0
        for group_key, ms in sorted(totals.items(), key=lambda t: (-t[1], t[0])):
            running += ms
            table.append(
                {
                    **dict(group_key),
                    "stops": counts[group_key],
                    "minutes": _min(ms),
                    "share_pct": round(100 * ms / whole, 1),
                    "cumulative_pct": round(100 * running / whole, 1),
                }
            )
        return table

    # shifts
    def stops_report(self) -> dict[str, list[dict]]:
        return {"per_shift": [row for row, _ in self._shift_rows]}

    def availability_report(self) -> dict[str, list[dict]]:
        table = []
        for row, planned_ms in self._shift_rows:
            stopped = row["stop_minutes"] * 60_000
            available = (planned_ms - min(stopped, planned_ms)) / planned_ms if planned_ms else None
            table.append(
                {
                    **{k: row[k] for k in ("line", "shift", "start")},
                    "planned_minutes": _min(planned_ms),
                    "stop_minutes": row["stop_minutes"],
                    "availability_pct": None if available is None else round(100 * available, 1),
                }
            )
        return {"per_line_and_shift": table}

    @cached_property
    def _shift_rows(self) -> list[tuple[dict, int]]:
        """Per line and shift occurrence that has begun: the stops in it, and its planned ms."""
        rows = []
        stops: dict[str, list[dict]] = defaultdict(list)  # per line, in time order, disjoint
        for stop in self.stops:
            stops[stop["line"]].append(stop)
        for line_id, calendar in self.calendars.items():
            line_stops = stops[line_id]
            ends = [s["end"] for s in line_stops]
            for w in calendar.windows:
                if w.start >= self.now:
                    continue  # not begun: nothing planned yet
                first = bisect_right(ends, w.start)  # the first stop ending inside or after w
                mine = []
                for stop in line_stops[first:]:
                    if stop["start"] >= w.end:
                        break
                    mine.append(stop)
                planned_ms = w.worked(self.now)  # working time so far: breaks are not planned
                row = {
                    "line": line_id,
                    "shift": w.name,
                    "start": self._local(w.start),
                    "stops": sum(1 for s in mine if w.covers(s["start"])),
                    "stop_minutes": _min(sum(self._overlap(s, w) for s in mine)),
                }
                rows.append((row, planned_ms))
        return rows

    # kanban
    def kanban_report(self) -> dict[str, list[dict]]:
        leads: dict[str, list[int]] = defaultdict(list)
        overdue: dict[str, int] = defaultdict(int)
        for o in self.orders:
            if o["received"] is not None:
                leads[o["part"]].append(o["received"] - o["posted"])
            overdue[o["part"]] += bool(o["overdue"])
        loops = []
        for loop in self.kanban:
            part = loop["part"]
            loops.append(
                {
                    "part": part,
                    "orders": sum(1 for o in self.orders if o["part"] == part),
                    "received": len(leads[part]),
                    "lead_mean_min": _min(mean(leads[part])),
                    "lead_p90_min": _min(p90(leads[part])),
                    "overdue": overdue[part],
                    "lost_cards": loop["cards"]["lost"],
                    "cards": loop["cards"]["total"],
                    "recommended_cards": loop["recommended_cards"],
                }
            )
        late = [
            {
                "order": o["id"],
                "part": o["part"],
                "posted": self._local(o["posted"]),
                "due": self._local(o["due"]),
                "received": self._local(o["received"]) if o["received"] else "-",
            }
            for o in self.orders
            if o["overdue"]
        ]
        return {"loops": loops, "overdue_orders": late}

    def report(self, name: str) -> dict[str, list[dict]]:
        return getattr(self, f"{name}_report")()

    def _local(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, self.config.zone).strftime("%Y-%m-%d %H:%M")


def _s(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 1000, 1)


def _min(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 60_000, 1)


# --- output: CSV, HTML -------------------------------------------------------------------


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def html_table(rows: list[dict], csv_url: str, most: int = 200) -> str:
    """A table of the first `most` rows (a year's stops would make a page no one reads), and
    the link to all of them as CSV."""
    link = f'<a class="csv" href="{html.escape(csv_url)}">CSV</a>'
    if not rows:
        return f"<p class=empty>nothing in this period {link}</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows[:most]
    )
    more = f"<p>{len(rows) - most} more rows in the CSV</p>" if len(rows) > most else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}{link}"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def pareto_svg(rows: list[dict], label: Callable[[dict], str], width: int = 720) -> str:
    """Bars of downtime minutes, largest first, and the cumulative share as a line."""
    rows = rows[:12]
    if not rows:
        return ""
    height, left, bottom, top = 260, 50, 60, 14
    plot_w, plot_h = width - left - 40, height - bottom - top
    peak = max(r["minutes"] for r in rows) or 1
    step = plot_w / len(rows)
    parts = [f'<svg class=pareto viewBox="0 0 {width} {height}" role="img">']
    points = []
    for i, row in enumerate(rows):
        bar_h = plot_h * row["minutes"] / peak
        x = left + i * step
        parts.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{top + plot_h - bar_h:.1f}"'
            f' width="{step * 0.8:.1f}" height="{bar_h:.1f}"><title>'
            f"{html.escape(label(row))}: {row['minutes']} min</title></rect>"
        )
        parts.append(
            f'<text x="{x + step / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{html.escape(label(row))[:14]}</text>"
        )
        cum_y = top + plot_h * (1 - row["cumulative_pct"] / 100)
        points.append(f"{x + step / 2:.1f},{cum_y:.1f}")
    parts.append(f'<polyline class=cumulative points="{" ".join(points)}"/>')
    parts.append(f'<text x="4" y="{top + 10}">{peak} min</text>')
    parts.append(f'<text x="{width - 36}" y="{top + 10}">100%</text>')
    parts.append("</svg>")
    return "".join(parts)


LABELS = {
    "by_station": lambda r: f"{r['line']}/{r['station']}",
    "by_cause": lambda r: r["cause"],
    "by_reason": lambda r: r["reason"],
}


def report_page(config: PlantConfig, figures: Figures, shifts: list[str], prefix: str) -> str:
    """The reports as one HTML page: a filter form, then each table (with its CSV link) and
    the downtime Pareto charts."""
    period = figures.period
    first, last = figures._local(period.start)[:10], figures._local(period.end - 1)[:10]
    query = f"start={first}&end={last}" + (f"&shift={period.shift}" if period.shift else "")
    sections = []
    for name in REPORTS:
        for table, rows in figures.report(name).items():
            label = LABELS.get(table) if name == "downtime" else None
            chart = pareto_svg(rows, label) if label else ""
            title = html.escape(f"{name}: {table.replace('_', ' ')}")
            csv_url = f"{prefix}/reports/{name}/{table}.csv?{query}"
            sections.append(
                f'<section id="{name}-{table}"><h2>{title}</h2>'
                f"{chart}{html_table(rows, csv_url)}</section>"
            )
    options = "".join(
        f"<option{' selected' if s == period.shift else ''}>{html.escape(s)}</option>"
        for s in shifts
    )
    template = (ASSETS / "reports.html").read_text(encoding="utf-8")
    return (
        template.replace("{{site}}", html.escape(config.site))
        .replace("{{start}}", first)
        .replace("{{end}}", last)
        .replace("{{shifts}}", options)
        .replace("{{sections}}", "".join(sections))
    )


# --- routes --------------------------------------------------------------------------------

Start = Annotated[date | None, Query(description="first day, plant time [6 days ago]")]
End = Annotated[date | None, Query(description="last day, included [today]")]
ShiftName = Annotated[str | None, Query(description="one shift's name [every shift]")]


def router(
    config: PlantConfig,
    viewer: Callable,
    kanban: Callable[[], list[dict]],
    prefix: str,
    now: Callable[[], int],
) -> APIRouter:
    """`/reports` (HTML) and `{prefix}/reports/{name}` (JSON, and each table as CSV).
    `kanban` gives the view's kanban loops (card counts now)."""
    routes = APIRouter(dependencies=[Depends(viewer)])
    shifts = sorted({s.name for ln in config.lines for s in ln.shifts})

    def compute(start: date | None, end: date | None, shift: str | None) -> Figures:
        today = datetime.fromtimestamp(now() / 1000, config.zone).date()
        if shift is not None and shift not in shifts:
            raise HTTPException(422, f"no shift {shift!r} in the plant's calendar")
        period = period_of(config, start or today - timedelta(days=6), end or today, shift)
        return Figures(config, period, kanban(), now())

    @routes.get(f"{prefix}/reports/{{name}}")
    def report(name: str, start: Start = None, end: End = None, shift: ShiftName = None) -> dict:
        """One report (calls, downtime, stops, availability, kanban): its tables of rows."""
        if name not in REPORTS:
            raise HTTPException(404, f"no report {name!r}: {', '.join(REPORTS)}")
        found = compute(start, end, shift)
        period = found.period
        return {"start": period.start, "end": period.end, "shift": shift, **found.report(name)}

    @routes.get(f"{prefix}/reports/{{name}}/{{table}}.csv")
    def report_csv(
        name: str, table: str, start: Start = None, end: End = None, shift: ShiftName = None
    ) -> PlainTextResponse:
        """One table of a report as CSV."""
        tables = compute(start, end, shift).report(name) if name in REPORTS else {}
        if table not in tables:
            raise HTTPException(404, f"no table {name}/{table}")
        headers = {"Content-Disposition": f'attachment; filename="{name}-{table}.csv"'}
        return PlainTextResponse(to_csv(tables[table]), media_type="text/csv", headers=headers)

    @routes.get("/reports", include_in_schema=False)
    def reports_html(
        request: Request, start: Start = None, end: End = None, shift: ShiftName = None
    ) -> HTMLResponse:
        found = compute(start, end, shift or None)
        page = HTMLResponse(report_page(config, found, shifts, prefix))
        return remember_token(page, request)  # its CSV links then work from a kiosk URL

    return routes
