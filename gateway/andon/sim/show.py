"""The terminal andon board: towers as coloured blocks, line states, open calls and orders.

`andon sim lights` prints one line's towers; `andon demo` shows `board(...)` live (rich Live),
or `plain_status(...)` lines when there is no terminal.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Group
from rich.table import Table
from rich.text import Text

from andon.status import when

TOWER = ("red", "amber", "green", "blue", "white")
STYLE = {"red": "red", "amber": "dark_orange", "green": "green", "blue": "blue", "white": "white"}
BLOCK = {"on": "██", "slow": "▓▓", "fast": "▒▒"}  # blinking segments look lighter
Lamps = dict[str, str] | None


def tower(lamps: Lamps, slim: bool = False) -> Text:
    """One tower, top to bottom left to right; a board without power shows as such. `slim`:
    one column a segment and no buzzer, for the live board's rows of stations."""
    if lamps is None:
        return Text("  off" if slim else "power off", style="dim")
    text = Text()
    for seg in TOWER:
        mode = lamps.get(seg, "off")
        block = BLOCK.get(mode, "··")
        text.append(block[0] if slim else f"{block} ", style=STYLE[seg] if mode in BLOCK else "dim")
    if not slim and lamps.get("buzzer", "off") != "off":
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


BOARD_SIZE = (80, 24)  # the live board fits a standard terminal
PER_ROW = 6  # stations side by side on the live board: 6 x 13 columns
MAX_CALLS, MAX_ORDERS = 4, 3


def _line_rows(line: dict[str, Any], lamps: dict[str, Lamps]) -> list[Text]:
    colour = {"running": "green", "called": "dark_orange", "stopped": "bold red"}
    rows = [
        Text.assemble(
            (f"{line['id']} {line['name']}: ", "bold"),
            (line["state"].upper(), colour.get(line["state"], "")),
        )
    ]
    stations = line["stations"]
    for start in range(0, len(stations), PER_ROW):
        row = Text("  ")
        for s in stations[start : start + PER_ROW]:
            mark = "!" if not s["online"] else (s["call"] or "")[:1].upper() or " "
            row.append(f"{s['id']:>4} ")
            row.append_text(tower(lamps.get(f"{line['id']}/{s['id']}"), slim=True))
            row.append(f"{mark}  ", style="bold red" if mark == "!" else "bold")
        rows.append(row)
    return rows


def _call_row(c: dict[str, Any], now: int, zone: ZoneInfo) -> Text:
    if c["stopped"] is not None:
        stop = f"LINE STOPPED {when(c['stopped'], zone, now)}"
    elif c["stop_at"] is not None:
        stop = f"stops in {max(0, c['stop_at'] - now) // 1000} s"
    else:
        stop = ""
    acked = f"ack {c['acknowledged_by'] or 'button'}" if c["acknowledged"] else "not acked"
    where = f"{c['line']}/{c['station']}"
    opened = when(c["opened"], zone, now)
    return Text(f"  {c['id']} {where} {c['cause']} {opened} {acked} {stop}")


def _order_row(o: dict[str, Any], now: int, zone: ZoneInfo) -> Text:
    due = when(o["due"], zone, now) + (" OVERDUE" if o["overdue"] else "")
    return Text(f"  {o['id']} {o['part']} x{o['qty']} {o['supplier']} due {due}")


def _capped(title: str, rows: list[Text], most: int) -> list[Text]:
    more = [Text(f"  ... and {len(rows) - most} more", style="dim")] if len(rows) > most else []
    return [Text(f"{title}: {len(rows) or 'none'}", style="bold"), *rows[:most], *more]


def board(
    view: dict[str, Any] | None,
    lamps: dict[str, Lamps],
    log: list[str],
    zone: ZoneInfo,
    height: int = BOARD_SIZE[1],
) -> Group:
    """The whole live board in 80 columns and `height` rows: each line's towers (with the
    open call's first letter, or ! offline), open calls, open orders, then the scenario's
    latest steps in what room is left."""
    if view is None:
        return Group(Text("waiting for the gateway's first state...", style="dim"))
    rows: list[Text] = [row for line in view["lines"] for row in _line_rows(line, lamps)]
    now = view["now"] or 0
    calls = [_call_row(c, now, zone) for c in view["calls"]]
    rows += _capped("open calls", calls, MAX_CALLS)
    rows += _capped("open orders", [_order_row(o, now, zone) for o in view["orders"]], MAX_ORDERS)
    room = max(0, height - len(rows) - 1)  # the cursor's line
    rows += [Text(entry, style="cyan") for entry in log[-room:]] if room else []
    for row in rows:
        row.no_wrap, row.overflow = True, "ellipsis"
    return Group(*rows)


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
