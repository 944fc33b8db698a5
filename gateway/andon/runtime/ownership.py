"""Which gateway serves which line, when several share one PostgreSQL store.

Each line has a lease row (line, owner, epoch, expires), on the database's clock so that the
gateways' own clocks do not matter. A thread of each gateway, every third of the lease:

1. says it is alive (`member`), and counts the live gateways: its fair share is
   ceil(lines / live gateways);
2. renews its own leases (a lease renewed under another epoch is not its own any more);
3. gives back what it holds above its fair share (a gateway that joins gets lines);
4. takes lines whose lease expired, or that nobody holds, up to its share; each take is a new
   epoch, which fences the previous owner's commits (`andon.runtime.store_pg`).

When the lines it owns change, it tells the gateway (`on_change`, with line -> epoch), which
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
        lines: list[str],
        lease_s: float,
        on_change: Callable[[dict[str, int]], None],
    ) -> None:
        self.url = url
        self.name = name
        self.lines = lines
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
        """One round: alive, renew, give back above the fair share, take free lines."""
        ttl = f"{self.lease_s} seconds"
        db = self._db
        db.execute(
            "INSERT INTO member VALUES (%s, now() + %s::interval)"
            " ON CONFLICT (name) DO UPDATE SET expires = excluded.expires",
            (self.name, ttl),
        )
        live = db.execute("SELECT count(*) FROM member WHERE expires > now()").fetchone()[0]
        share = math.ceil(len(self.lines) / max(live, 1))
        kept = dict(
            db.execute(
                "UPDATE lease SET expires = now() + %s::interval WHERE owner = %s"
                " AND line = ANY(%s) RETURNING line, epoch",
                (ttl, self.name, list(self.owned)),
            ).fetchall()
        )
        kept = {line: epoch for line, epoch in kept.items() if self.owned.get(line) == epoch}
        excess = sorted(kept)[share:]
        if excess:
            db.execute(
                "UPDATE lease SET expires = now() WHERE owner = %s AND line = ANY(%s)",
                (self.name, excess),
            )
        owned = {line: kept[line] for line in sorted(kept)[:share]}
        for line in self.lines:
            if len(owned) >= share:
                break
            if line not in owned and (epoch := self._take(line, ttl)) is not None:
                owned[line] = epoch
        if owned != self.owned:
            log.info("%s owns %s", self.name, ", ".join(sorted(owned)) or "no line")
            self.owned = owned
            self.on_change(dict(owned))

    def _take(self, line: str, ttl: str) -> int | None:
        """Own `line` under a new epoch if nobody holds it; its epoch, or None."""
        row = self._db.execute(
            "INSERT INTO lease VALUES (%s, %s, 1, now() + %s::interval)"
            " ON CONFLICT (line) DO UPDATE SET owner = excluded.owner,"
            " epoch = lease.epoch + 1, expires = excluded.expires"
            " WHERE lease.expires <= now() RETURNING epoch",
            (line, self.name, ttl),
        ).fetchone()
        return row[0] if row else None
