"""Replaying the event log: the plant rebuilt from what the store holds.

The gateway rebuilds its state from here at start; `andon status`, `andon replay --check` and
the demo read the plant through it too, without loading the gateway's network stack.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from andon import contract
from andon.config import PlantConfig
from andon.core import Plant, Record
from andon.core.effects import Effect
from andon.runtime.store import OPERATOR, Entry, LoggedEntry, Projection, Store, open_store

log = logging.getLogger("andon.gateway")

# Log entries between projections. A projection of 1,000 stations stalls the worker some
# 30 ms; the entries after it are replayed at a restart, some 40 us each: 20,000 keep the
# stall rare and the replay under a second.
SNAPSHOT_EVERY = 20_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class NothingToCompare(ValueError):
    """`replay --check` without a stored projection: there is nothing to check the log against."""


def record_of(site: str, entry: LoggedEntry | Entry) -> Record:
    """A logged entry as the core's record; the message is validated again on the way back
    (a board's by the wire contract, a gap record of the gateway's by its own)."""
    if entry.leaf == "gateway":
        message = contract.gateway_record(entry.message)
    elif entry.leaf == OPERATOR:
        message = contract.Operator.model_validate_json(entry.message)
    else:
        topic = contract.Station(site, entry.line, entry.station).topic(entry.leaf)
        _, message = contract.decode_uplink(topic, entry.message.encode())
    return Record(entry.received, entry.line, entry.station, message, entry.at)


def rebuild(
    config: PlantConfig,
    store: Store,
    from_scratch: bool = False,
    on_effects: Callable[[list[Effect]], None] | None = None,
) -> tuple[Plant, int, int]:
    """The plant as the store last committed it, the log position it reflects, and how many
    log entries were replayed on top of the projection to get there.

    From the stored projection plus the log after it, or (`from_scratch`) from the whole log.
    Effects of the replay were committed with their records, so they are dropped here
    (`on_effects`, if given, sees them).
    """
    projection = None if from_scratch else store.projection()
    try:
        plant = Plant.restore(config, projection.snapshot) if projection else Plant(config)
    except ValueError as exc:  # another version or configuration: the log is the truth
        log.info("rebuilding from the whole log: %s", exc)
        projection, plant = None, Plant(config)
    pos = projection.pos if projection else 0
    replayed = 0
    lines = {line.id for line in config.lines}  # one gateway of several: its own lines
    # One that owns no line yet (at its start on PostgreSQL) has nothing in the log to apply.
    for entry in store.log(after=pos) if lines else ():
        if entry.line not in lines:
            continue
        effects = plant.apply(record_of(config.site, entry))
        if on_effects is not None:
            on_effects(effects)
        pos = entry.pos
        replayed += 1
    plant.advance(store.clock())
    return plant, pos, replayed


def restorable(config: PlantConfig, store: Store) -> bool:
    """Can the stored projection (if any) be restored? Not when it is of another version or
    plant: the whole log is then replayed under today's rules, and the records it gives (calls
    numbered anew, say) replace the stored ones."""
    projection = store.projection()
    if projection is None:
        return True
    try:
        Plant.restore(config, projection.snapshot)
    except ValueError:
        return False
    return True


@dataclass
class Checked:
    """What `replay_check` found: the differences, and the lines it compared and could not."""

    differences: list[str]
    lines: list[str]  # those a stored projection holds
    unchecked: list[str]  # those no projection holds yet


def replay_check(config: PlantConfig, store: Store) -> Checked:
    """Rebuild from the log up to each stored projection and compare.

    One gateway stores one projection, of the whole plant. Several on PostgreSQL store one per
    set of lines a gateway owned: each line is checked against the latest that holds it (its
    lines are rebuilt together, as the gateway that saved it had them). Raises
    NothingToCompare when no projection is stored: an empty comparison proves nothing."""
    latest = _latest_per_line(config, store.projections())
    if not latest:
        raise NothingToCompare(
            "no projection is stored yet for the plant's lines (a gateway saves one when it"
            f" stops, and every {SNAPSHOT_EVERY} log entries): there is nothing to compare the"
            " log with"
        )
    differences = []
    for scope, projection in latest.items():
        part = config.only_lines(set(scope.split(","))) if scope else config
        named = f"[{scope}] " if scope else ""
        differences += [named + d for d in _compare(part, store, projection)]
    held = {line.id: any(_holds(scope, line.id) for scope in latest) for line in config.lines}
    return Checked(
        differences,
        lines=[line for line, checked in held.items() if checked],
        unchecked=[line for line, checked in held.items() if not checked],
    )


def _holds(scope: str, line: str) -> bool:
    return not scope or line in scope.split(",")


def _latest_per_line(config: PlantConfig, stored: dict[str, Projection]) -> dict[str, Projection]:
    """The projections to check: for each line, the latest that holds it ("": every line)."""
    latest = {}
    for line in config.lines:
        holding = [scope for scope in stored if _holds(scope, line.id)]
        if holding:
            scope = max(holding, key=lambda s: (stored[s].pos, stored[s].clock))
            latest[scope] = stored[scope]
    return latest


def _compare(config: PlantConfig, store: Store, projection: Projection) -> list[str]:
    """The plant of `config`'s lines from the log up to the projection, against it."""
    plant, lines = Plant(config), {line.id for line in config.lines}
    for entry in store.log():
        if entry.pos > projection.pos:
            break
        if entry.line in lines:
            plant.apply(record_of(config.site, entry))
    plant.advance(projection.clock)
    rebuilt, stored = plant.snapshot(), projection.snapshot
    return [
        f"{key}: the log gives {rebuilt.get(key)!r}, the projection holds {stored.get(key)!r}"
        for key in sorted(rebuilt.keys() | stored.keys())
        if rebuilt.get(key) != stored.get(key)
    ]


def plant_view(config: PlantConfig, at_ms: int | None = None) -> dict:
    """The plant at `at_ms` (default: now), rebuilt from the database: timers due by then
    fired, nothing written."""
    store = open_store(config)
    try:
        plant, _, _ = rebuild(config, store)
    finally:
        store.close()
    plant.advance(wall_ms() if at_ms is None else at_ms)
    return plant.view()


class LogFollower:
    """The whole plant, kept up to date from a shared store's log: the plant-wide view a
    gateway of several serves (the API, the board, /metrics), reading only what was logged
    since it last looked instead of the whole log at every request.

    The log is followed line by line. Gateways reserve log positions in blocks, so across lines
    a position may become visible after higher ones of another gateway; within a line, one
    owner at a time commits in position order, and a new owner writes from a block reserved
    after it took the line (`PgStore.reload`). So each line's entries after the last one
    applied are exactly the ones not seen yet."""

    def __init__(self, config: PlantConfig) -> None:
        self._config = config
        self._store: Store | None = None  # opened on first use, on a connection of its own
        self._plant = Plant(config)
        self._after = {line.id: 0 for line in config.lines}  # line -> last position applied
        self._lock = threading.Lock()

    def view(self, at_ms: int | None = None) -> dict:
        with self._lock:
            if self._store is None:
                self._store = open_store(self._config)
            self._catch_up(self._store)
            self._plant.advance(wall_ms() if at_ms is None else at_ms)
            return self._plant.view()

    def _catch_up(self, store: Store) -> int:
        """Apply what each line logged since it was last read, in log order; how many."""
        site, applied = self._config.site, 0
        fresh = [store.line_log(line, after) for line, after in self._after.items()]
        for entry in heapq.merge(*fresh, key=lambda e: e.pos):
            self._plant.apply(record_of(site, entry))
            self._after[entry.line] = entry.pos
            applied += 1
        return applied

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
