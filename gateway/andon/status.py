"""How the `andon` command shows the plant: `andon status` tables and `andon events` lines,
times in the plant's timezone, every table within 80 columns (a terminal, a log, a pipe)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.table import Table

if TYPE_CHECKING:
    from andon.runtime.store import LoggedEntry

WIDTH = 80


def when(ms: int | None, zone: ZoneInfo, now: int | None = None) -> str:
    """`14:03:07` on the day of `now`, `11-29 14:03` before it, `-` for never (None, or the
    0 of a plant that has seen no record yet)."""
    if not ms:
        return "-"
    at = datetime.fromtimestamp(ms / 1000, zone)
    today = now is not None and at.date() == datetime.fromtimestamp(now / 1000, zone).date()
    return at.strftime("%H:%M:%S" if today else "%m-%d %H:%M")


def iso(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="milliseconds")


def _table(*columns: str, title: str) -> Table:
    """Long cells fold onto a second line rather than being cut to `...`."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _line_table(line: dict[str, Any], zone: ZoneInfo, now: int | None) -> Table:
    title = f"{line['id']} {line['name']}: {line['state']} since {when(line['since'], zone, now)}"
    table = _table("station", "name", "state", "call", "since", "mat", "online", title=title)
    for s in line["stations"]:
        online = "yes" if s["online"] else "NO"
        row = (s["id"], s["name"], s["state"], s["call"] or "-", when(s["since"], zone, now))
        table.add_row(*row, "yes" if s["material"] else "-", online)
    return table


def _calls_table(view: dict[str, Any], zone: ZoneInfo) -> Table:
    now = view["now"]
    columns = ("call", "station", "cause", "opened", "acknowledged", "line stop")
    table = _table(*columns, title=f"open calls: {len(view['calls'])}")
    for c in view["calls"]:
        if c["stopped"] is not None:
            stop = f"stopped {when(c['stopped'], zone, now)}"
        elif c["stop_at"] is not None and now is not None:
            stop = f"in {max(0, c['stop_at'] - now) // 1000} s"
        else:
            stop = "-"
        who = c["acknowledged_by"] or "button"
        acked = f"{when(c['acknowledged'], zone, now)} {who}" if c["acknowledged"] else "-"
        where = f"{c['line']}/{c['station']}"
        table.add_row(c["id"], where, c["cause"], when(c["opened"], zone, now), acked, stop)
    return table


def _alerts_table(alerts: list[dict[str, Any]], zone: ZoneInfo, now: int | None) -> Table:
    table = _table("alert", "kind", "where", "since", "text", title=f"open alerts: {len(alerts)}")
    for a in alerts:
        where = "/".join(p for p in (a.get("line"), a.get("station")) if p) or "-"
        since = when(a.get("ts"), zone, now)
        table.add_row(str(a.get("id", "-")), a.get("kind", "-"), where, since, a.get("text", ""))
    return table


def _kanban_table(view: dict[str, Any]) -> Table:
    table = _table("part", "in use", "ordered", "overdue", "lost", "recommended", title="kanban")
    for loop in view["kanban"]:
        cards = loop["cards"]
        counts = (cards["in_use"], cards["ordered"], cards["overdue"], cards["lost"])
        table.add_row(loop["part"], *map(str, counts), str(loop["recommended_cards"]))
    return table


def status_tables(view: dict[str, Any], zone: ZoneInfo) -> list[Table]:
    """`andon status`: each line's stations, the open calls, the open alerts (once the core
    reports them), the kanban loops."""
    now = view["now"]
    tables = [_line_table(line, zone, now) for line in view["lines"]]
    tables.append(_calls_table(view, zone))
    if "alerts" in view:
        tables.append(_alerts_table(view["alerts"], zone, now))
    tables.append(_kanban_table(view))
    return tables


def entry_line(entry: LoggedEntry, zone: ZoneInfo) -> str:
    """One line of `andon events`."""
    where = f"{entry.line}/{entry.station}"
    return f"{iso(entry.received, zone)}  #{entry.pos:<8} {where:<10} {entry.message}"


def entry_json(entry: LoggedEntry, zone: ZoneInfo) -> dict[str, Any]:
    """One entry of `andon events --json`: the message as the board sent it, decoded."""
    return {
        "pos": entry.pos,
        "received": iso(entry.received, zone),
        "line": entry.line,
        "station": entry.station,
        "message": json.loads(entry.message),
    }
