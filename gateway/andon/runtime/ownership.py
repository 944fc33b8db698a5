"""Which gateway serves which line, when several share one PostgreSQL store.

Each line has a lease row (line, owner, epoch, expires), on the database's clock so that the
gateways' own clocks do not matter. Lines are owned in groups: the lines a kanban loop links
(its post and receive stations, `PlantConfig.line_groups`) are always owned by one gateway,
which alone can follow a card from its post to its receipt. A thread of each gateway, every
third of the lease:

1. says it is alive (`member`), and counts the live gateways: its fair share is
   ceil(lines / live gateways);
2. renews its own leases (a lease renewed under another epoch is not its own any more, nor is
   a group of which it lost a line);
3. gives back whole groups while what it keeps is still its fair share (a gateway that joins
   gets lines);
4. takes groups whose leases expired, or that nobody holds, while it has less than its share;
   a group's lines are taken in one transaction, all or none, each under a new epoch, which
   fences the previous owner's commits (`andon.runtime.store_pg`).

Giving back only what leaves the share whole, and taking only below it, keeps the split
stable with groups of any size: no group passes back and forth between two gateways. When the
lines it owns change, it tells the gateway (`on_change`, with line -> epoch), which
subscribes to those lines only and rebuilds their state from the store. A dead gateway's lines
are free once its lease expires: taken over within `lease_s` plus a third of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable

import psycopg

log = logging.getLogger("andon.ownership")


class LineLeases:
    """The lease keeper of one gateway: `start()`, then `stop()` (which gives its lines back)."""

    def __init__(
        self,
        url: str,
        name: str,
        groups: list[list[str]],
        lease_s: float,
        on_change: Callable[[dict[str, int]], None],
    ) -> None:
        self.url = url
        self.name = name
        self.groups = groups  # the plant's lines, in the groups they are owned in
        self.lease_s = lease_s
        self.on_change = on_change
        self.owned: dict[str, int] = {}  # line -> epoch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="andon-leases", daemon=True)
        self._db: psycopg.Connection | None = None

    def start(self) -> None:
        self._db = psycopg.connect(self.url, autocommit=True)
        self.tick()  # own lines before the gateway connects to the broker
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and give the lines back at once: no wait for a takeover."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(self.lease_s)
        if self._db is None:
            return
        with contextlib.suppress(psycopg.Error):  # unreachable: the leases lapse by themselves
            self._db.execute(
                "UPDATE lease SET expires = now() WHERE owner = %s AND line = ANY(%s)",
                (self.name, list(self.owned)),
            )
            self._db.execute("DELETE FROM member WHERE name = %s", (self.name,))
        self._db.close()

    def _run(self) -> None:
        while not self._stopping.wait(self.lease_s / 3):
            try:
                self.tick()
            except psycopg.Error as exc:  # the database is away: the leases lapse, retry
                log.warning("cannot renew the line leases: %s", exc)
                self._reconnect()

    def _reconnect(self) -> None:
        try:
            self._db = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error:
            return

    def tick(self) -> None:
        """One round: alive, renew, give back above the fair share, take free groups."""
        ttl = f"{self.lease_s} seconds"
        db = self._db
        db.execute(
            "INSERT INTO member VALUES (%s, now() + %s::interval)"
            " ON CONFLICT (name) DO UPDATE SET expires = excluded.expires",
            (self.name, ttl),
        )
        live = db.execute("SELECT count(*) FROM member WHERE expires > now()").fetchone()[0]
        share = math.ceil(_size(self.groups) / max(live, 1))
        renewed = dict(
            db.execute(
                "UPDATE lease SET expires = now() + %s::interval WHERE owner = %s"
                " AND line = ANY(%s) RETURNING line, epoch",
                (ttl, self.name, list(self.owned)),
            ).fetchall()
        )
        kept = [g for g in self.groups if all(_same(renewed, self.owned, ln) for ln in g)]
        while kept and _size(kept) - len(kept[-1]) >= share:
            kept.pop()
        owned = {line: renewed[line] for group in kept for line in group}
        if given_back := sorted(renewed.keys() - owned.keys()):
            db.execute(
                "UPDATE lease SET expires = now() WHERE owner = %s AND line = ANY(%s)",
                (self.name, given_back),
            )
        for group in self.groups:
            if len(owned) >= share:
                break
            if group[0] not in owned:
                owned |= self._take(group, ttl)
        if owned != self.owned:
            log.info("%s owns %s", self.name, ", ".join(sorted(owned)) or "no line")
            self.owned = owned
            self.on_change(dict(owned))

    def _take(self, group: list[str], ttl: str) -> dict[str, int]:
        """Own every line of `group` under a new epoch if nobody holds any of them (line ->
        epoch), else none of them (an empty dict)."""
        with self._db.transaction() as tx:
            taken = dict(
                self._db.execute(
                    "INSERT INTO lease SELECT line, %s, 1, now() + %s::interval"
                    " FROM unnest(%s::text[]) AS line"
                    " ON CONFLICT (line) DO UPDATE SET owner = excluded.owner,"
                    " epoch = lease.epoch + 1, expires = excluded.expires"
                    " WHERE lease.expires <= now() RETURNING line, epoch",
                    (self.name, ttl, sorted(group)),  # one order of locks for every gateway
                ).fetchall()
            )
            if len(taken) < len(group):  # another gateway holds one of them
                taken = {}
                raise psycopg.Rollback(tx)
        return taken


def _same(renewed: dict[str, int], owned: dict[str, int], line: str) -> bool:
    """Still held as it was: renewed, under the epoch it was taken with."""
    return line in renewed and renewed[line] == owned.get(line)


def _size(groups: list[list[str]]) -> int:
    return sum(len(group) for group in groups)
