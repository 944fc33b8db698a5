"""Escalation webhooks: alerts POSTed as JSON from a thread of their own, with retries.

The gateway's worker never waits for a web server. It logs each webhook delivery in the
store's outbox in the same transaction as the alert, and hands it here once committed. This
thread POSTs it; a failure (no answer within the timeout, a refused connection, a status that
is not 2xx) is tried again after a backoff that doubles each time, up to `tries` attempts in
all, then given up. Every outcome goes back to the worker through `report`, which persists it:
a restart resumes the deliveries still pending, counting the attempts already made.

A delivery is at least once: a crash between a successful POST and its commit repeats it after
the restart. Each request carries its outbox id as `Idempotency-Key` so a receiver can tell.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace

log = logging.getLogger("andon.runtime.webhook")


@dataclass(frozen=True)
class Delivery:
    id: int  # its outbox row
    url: str
    payload: bytes  # the alert, JSON
    attempts: int = 0  # made so far


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery  # with the attempt just made counted
    delivered: bool
    gave_up: bool  # failed for the last time
    error: str | None = None


class WebhookSender:
    """One thread that POSTs deliveries: `start()`, `submit()` each, `stop()`."""

    def __init__(
        self,
        report: Callable[[Outcome], None],
        tries: int,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 5.0,
    ) -> None:
        if tries < 1:
            raise ValueError("a webhook needs at least one try")
        self.report = report
        self.tries = tries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._due: list[tuple[float, int, Delivery]] = []  # (when, id, delivery): a heap
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="andon-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, delivery: Delivery) -> None:
        """POST it as soon as possible (never blocks on the network)."""
        self._schedule(delivery, time.monotonic())

    def stop(self, timeout: float | None = None) -> None:
        """Finish the POST under way (its outcome is reported), then end; what waits for a
        retry stays pending in the store."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread.is_alive():
            self._thread.join(timeout if timeout is not None else self.timeout_s + 1)

    def _schedule(self, delivery: Delivery, when: float) -> None:
        with self._changed:
            heapq.heappush(self._due, (when, delivery.id, delivery))
            self._changed.notify()

    def _next(self) -> Delivery | None:
        """The next delivery once it is due; None when stopping."""
        with self._changed:
            while not self._stopping:
                wait = self._due[0][0] - time.monotonic() if self._due else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._due)[2]
                self._changed.wait(wait)
            return None

    def _run(self) -> None:
        while (delivery := self._next()) is not None:
            self.report(self._attempt(delivery))

    def _attempt(self, delivery: Delivery) -> Outcome:
        tried = replace(delivery, attempts=delivery.attempts + 1)
        error = self._post(delivery)
        if error is None:
            return Outcome(tried, delivered=True, gave_up=False)
        if tried.attempts >= self.tries:
            log.warning(
                "webhook %s: given up after %d tries: %s", delivery.url, tried.attempts, error
            )
            return Outcome(tried, delivered=False, gave_up=True, error=error)
        backoff = min(self.backoff_s * 2 ** (tried.attempts - 1), self.max_backoff_s)
        log.info(
            "webhook %s: %s; try %d in %.1f s", delivery.url, error, tried.attempts + 1, backoff
        )
        self._schedule(tried, time.monotonic() + backoff)
        return Outcome(tried, delivered=False, gave_up=False, error=error)

    def _post(self, delivery: Delivery) -> str | None:
        """POST once; None when the receiver took it (2xx), else what went wrong."""
        request = urllib.request.Request(
            delivery.url,
            data=delivery.payload,
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": str(delivery.id)},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:  # urlopen raises for every status but 2xx/3xx
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, bad URL
            return str(getattr(exc, "reason", exc))
        return None
