"""The terminal andon board: towers as coloured blocks, line states, open calls and orders.

`andon sim lights` prints one line's towers; `andon demo` shows `board(...)` live (rich Live),
or `plain_status(...)` lines when there is no terminal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

TOWER = ("red", "amber", "green", "blue", "white")
STYLE = {"red": "red", "amber": "dark_orange", "green": "green", "blue": "blue", "white": "white"}
BLOCK = {"on": "██", "slow": "▓▓", "fast": "▒▒"}  # blinking segments look lighter
Lamps = dict[str, str] | None


def tower(lamps: Lamps) -> Text:
    """One tower, top to bottom left to right; a board without power shows as such."""
    if lamps is None:
        return Text("power off", style="dim")
    text = Text()
    for seg in TOWER:
        mode = lamps.get(seg, "off")
        text.append(BLOCK.get(mode, "··"), style=STYLE[seg] if mode in BLOCK else "dim")
        text.append(" ")
    if lamps.get("buzzer", "off") != "off":
        text.append("♪", style="bold")
    return text


def tower_words(lamps: Lamps) -> str:
    """The same, in words, for logs: `red=on amber=slow` (or `off`, `power off`)."""
    if lamps is None:
        return "power off"
    lit = [f"{seg}={mode}" for seg, mode in lamps.items() if mode != "off"]
    return " ".join(lit) or "dark"


def lights_table(line: str, lamps_by_station: dict[str, Lamps]) -> Table:
    table = Table("station", "tower (red amber green blue white)", "lamps", title=f"line {line}")
    for station, lamps in lamps_by_station.items():
        table.add_row(station, tower(lamps), tower_words(lamps))
    return table


def _clock(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%H:%M:%S")


def _line_table(line: dict[str, Any], lamps: dict[str, Lamps]) -> Table:
    colour = {"running": "green", "called": "dark_orange", "stopped": "bold red"}
    title = Text.assemble(
        f"{line['id']} {line['name']}: ", (line["state"].upper(), colour.get(line["state"], ""))
    )
    table = Table("station", "name", "tower", "state", "call", "online", title=title)
    for s in line["stations"]:
        shown = lamps.get(f"{line['id']}/{s['id']}")
        online = "yes" if s["online"] else Text("NO", style="bold red")
        table.add_row(s["id"], s["name"], tower(shown), s["state"], s["call"] or "", online)
    return table


def _calls_table(view: dict[str, Any]) -> Table:
    now = view["now"] or 0
    columns = ("call", "station", "cause", "opened", "acknowledged", "line stop")
    table = Table(*columns, title="open calls")
    for c in view["calls"]:
        if c["stopped"] is not None:
            stop = Text(f"stopped {_clock(c['stopped'])}", style="bold red")
        elif c["stop_at"] is not None:
            stop = f"in {max(0, c['stop_at'] - now) // 1000} s"
        else:
            stop = "-"
        who = c["acknowledged_by"] or "ack button"
        acked = f"{_clock(c['acknowledged'])} {who}" if c["acknowledged"] else "-"
        where = f"{c['line']}/{c['station']}"
        table.add_row(c["id"], where, c["cause"], _clock(c["opened"]), acked, stop)
    return table


def _orders_table(view: dict[str, Any]) -> Table:
    table = Table("order", "part", "qty", "supplier", "posted at", "posted", "due", title="orders")
    for o in view["orders"]:
        where = f"{o['line']}/{o['station']}"
        due = _clock(o["due"]) + (" OVERDUE" if o["overdue"] else "")
        posted = _clock(o["posted"])
        table.add_row(o["id"], o["part"], str(o["qty"]), o["supplier"], where, posted, due)
    return table


def board(view: dict[str, Any] | None, lamps: dict[str, Lamps], log: list[str]) -> Group:
    """The whole live board: each line, open calls, open orders, the scenario's last steps."""
    if view is None:
        return Group(Text("waiting for the gateway's first state...", style="dim"))
    parts: list[Any] = [_line_table(line, lamps) for line in view["lines"]]
    parts += [_calls_table(view), _orders_table(view)]
    parts.append(Text("\n".join(log[-8:]) or "", style="cyan"))
    return Group(*parts)


def plain_status(view: dict[str, Any] | None, lamps: dict[str, Lamps]) -> str:
    """One block of plain lines: the board for a log file or a pipe."""
    if view is None:
        return "waiting for the gateway's first state"
    out = []
    for line in view["lines"]:
        stations = ", ".join(
            f"{s['id']}:{tower_words(lamps.get(line['id'] + '/' + s['id']))}"
            for s in line["stations"]
        )
        out.append(f"{line['id']} {line['state']}: {stations}")
    calls = ", ".join(f"{c['id']} {c['line']}/{c['station']}" for c in view["calls"])
    orders = ", ".join(f"{o['id']} {o['part']}" for o in view["orders"])
    out += [f"open calls: {calls or '-'}", f"open orders: {orders or '-'}"]
    return "\n".join(out)
