"""Escalation webhooks: retries with backoff off the worker, given up after N tries, resumed
after a restart. Against a local HTTP server on a free loopback port (and a real Mosquitto)."""

from __future__ import annotations

import json
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from andon.config import PlantConfig
from andon.runtime.store import SqliteStore
from andon.runtime.webhook import Delivery, Outcome, WebhookSender
from andon.sim.observe import wait_for
from tests.gateway.test_service import BOARDS, SITE, Watcher, evt, one_line, topic

FAST = 0.02  # backoff of the first retry in these tests, s


@dataclass
class Hook:
    """A webhook receiver: answers the statuses queued in `script` (then 200), and records
    each request as (headers, body). While `hold` is clear, requests wait."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    requests: queue.Queue = field(default_factory=queue.Queue)
    hold: threading.Event = field(default_factory=threading.Event)

    def next(self, timeout: float = 10.0) -> tuple[dict, dict]:
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no webhook request within {timeout}s") from None


@pytest.fixture
def hook():
    state = Hook()
    state.hold.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.hold.wait(30)
            state.requests.put((dict(self.headers), body))
            self.send_response(state.script.pop(0) if state.script else 200)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/andon"
    try:
        yield state
    finally:
        state.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def sender(tries: int) -> tuple[WebhookSender, queue.Queue]:
    outcomes: queue.Queue = queue.Queue()
    return WebhookSender(outcomes.put, tries, backoff_s=FAST, timeout_s=5), outcomes


def outcomes_of(outcomes: queue.Queue, count: int) -> list[Outcome]:
    return [outcomes.get(timeout=10) for _ in range(count)]


def test_a_failing_webhook_is_retried_until_it_takes_the_alert(hook):
    hook.script = [500, 503]
    webhooks, outcomes = sender(tries=4)
    webhooks.start()
    try:
        webhooks.submit(Delivery(7, hook.url, b'{"kind": "escalation", "tier": 1}'))
        got = outcomes_of(outcomes, 3)
    finally:
        webhooks.stop()
    assert [(o.delivered, o.gave_up, o.delivery.attempts, o.error) for o in got] == [
        (False, False, 1, "HTTP 500"),
        (False, False, 2, "HTTP 503"),
        (True, False, 3, None),
    ]
    requests = [hook.next() for _ in range(3)]
    assert [body for _, body in requests] == [{"kind": "escalation", "tier": 1}] * 3
    assert {h["Idempotency-Key"] for h, _ in requests} == {"7"}
    assert {h["Content-Type"] for h, _ in requests} == {"application/json"}


def test_a_webhook_that_keeps_failing_is_given_up_after_its_tries(hook):
    hook.script = [500] * 10
    webhooks, outcomes = sender(tries=3)
    webhooks.start()
    try:
        webhooks.submit(Delivery(1, hook.url, b"{}"))
        got = outcomes_of(outcomes, 3)
        webhooks.submit(Delivery(2, hook.url, b"{}"))  # still served after giving one up
        later = outcomes_of(outcomes, 1)
    finally:
        webhooks.stop()
    assert [(o.gave_up, o.delivery.attempts) for o in got] == [(False, 1), (False, 2), (True, 3)]
    assert (later[0].delivery.id, later[0].delivery.attempts) == (2, 1)
    assert hook.requests.qsize() == 4  # three tries of the first, one of the second so far


def test_an_unreachable_webhook_is_a_failed_try_not_a_crash(hook):
    webhooks, outcomes = sender(tries=2)
    webhooks.start()
    try:
        webhooks.submit(Delivery(1, "http://127.0.0.1:9/nothing-listens-here", b"{}"))
        got = outcomes_of(outcomes, 2)
    finally:
        webhooks.stop()
    assert [(o.delivered, o.gave_up) for o in got] == [(False, False), (False, True)]
    assert all(o.error for o in got)


# --- through the gateway -------------------------------------------------------------------


def plant(tmp_path, broker, url: str, retries: int) -> PlantConfig:
    return PlantConfig.model_validate(
        {
            "site": SITE,
            "gateway": {"database": str(tmp_path / "andon.db"), "client_id": "gw-hook"},
            "broker": {"host": broker.host, "port": broker.port},
            "escalation": {
                "tiers": [{"after_s": 1, "to": "team_leader"}],
                "webhook": url,
                "webhook_retries": retries,
            },
            "lines": one_line(600),
        }
    )


def webhook_rows(config: PlantConfig) -> list[tuple]:
    store = SqliteStore(config.gateway.database)
    try:
        return store.db.execute(
            "SELECT topic, attempts, sent IS NOT NULL, failed IS NOT NULL FROM outbox"
            " WHERE channel='webhook'"
        ).fetchall()
    finally:
        store.close()


@contextmanager
def gateway(config: PlantConfig, watcher: Watcher, backoff_s: float = FAST):
    """A Gateway online for the block, stopped even on failure."""
    from andon.runtime.service import Gateway

    gw = Gateway(config, webhook_backoff_s=backoff_s)
    watcher.seen.clear()
    try:
        gw.start()
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        yield gw
    finally:
        gw.stop()


def test_an_escalation_is_posted_with_retries_and_the_worker_never_waits(tmp_path, broker, hook):
    config = plant(tmp_path, broker, hook.url, retries=3)
    watcher = Watcher(broker)
    hook.script = [500]
    hook.hold.clear()  # the receiver hangs on the first try
    try:
        with gateway(config, watcher) as gw:
            watcher.publish(topic("S01"), evt(1, "cord_pulled"))
            alert = watcher.wait_for(lambda t, b: t.endswith("/alert"))
            # the webhook hangs; events still flow through the worker
            watcher.publish(topic("S02"), evt(1, "cord_pulled", board=BOARDS["S02"]))
            watcher.wait_for(lambda t, b: t == topic("S02", "state") and b["state"] == "called")
            hook.hold.set()
            first, second = hook.next(), hook.next()
            wait_for("webhook rows", lambda: webhook_rows(config) == [(hook.url, 2, 1, 0)])
            assert gw.webhooks_given_up == 0
    finally:
        watcher.close()
    assert alert["kind"] == "escalation" and alert["to"] == "team_leader"
    assert first[1] == second[1] == alert  # the alert as published on MQTT


def test_a_delivery_pending_at_a_stop_resumes_after_the_restart(tmp_path, broker, hook):
    config = plant(tmp_path, broker, hook.url, retries=2)
    watcher = Watcher(broker)
    hook.script = [500]
    try:
        with gateway(config, watcher, backoff_s=600):  # the retry would wait 10 minutes
            watcher.publish(topic("S01"), evt(1, "cord_pulled"))
            wait_for("webhook rows", lambda: webhook_rows(config) == [(hook.url, 1, 0, 0)])
        with gateway(config, watcher):
            wait_for("webhook rows", lambda: webhook_rows(config) == [(hook.url, 2, 1, 0)])
    finally:
        watcher.close()
    (before, alert), (after, again) = hook.next(), hook.next()
    assert alert == again and alert["kind"] == "escalation"
    assert before["Idempotency-Key"] == after["Idempotency-Key"]
    assert hook.requests.empty()


def test_a_given_up_delivery_is_counted_and_not_tried_again_after_a_restart(tmp_path, broker, hook):
    config = plant(tmp_path, broker, hook.url, retries=1)  # 2 tries in all
    watcher = Watcher(broker)
    hook.script = [500, 500]
    try:
        with gateway(config, watcher) as gw:
            watcher.publish(topic("S01"), evt(1, "cord_pulled"))
            wait_for("webhook rows", lambda: webhook_rows(config) == [(hook.url, 2, 0, 1)])
            assert gw.webhooks_given_up == 1
        with gateway(config, watcher) as gw:
            assert gw.webhooks_given_up == 1  # counted from the store
            # a new escalation: a given-up delivery, if retried, would be POSTed before it
            watcher.publish(topic("S02"), evt(1, "cord_pulled", board=BOARDS["S02"]))
            wait_for("webhook rows", lambda: [r[2] for r in webhook_rows(config)] == [0, 1])
    finally:
        watcher.close()
    assert hook.requests.qsize() == 3
