"""Prometheus `/metrics` for the gateway, read from its state at scrape time.

Nothing here runs on the hot path: the collector reads what the gateway already keeps (its
log position, rejection counts, queue, view) and the store's telemetry and webhook rows on a
read-only connection of its own when Prometheus asks (the SQLite file, or the PostgreSQL the
gateways share: there every board's telemetry, whichever gateway stored it). The one
measurement taken as it happens, the commit latency, is a histogram observation per batch (not
per message).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from andon.runtime.store import Reader, read_plant

if TYPE_CHECKING:
    from andon.runtime.service import Gateway

# s: a commit is one fsync (ms on an SSD); a disk stall shows in the top buckets
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def commit_histogram() -> Histogram:
    """The gateway's own (unregistered) histogram; the collector reports it."""
    return Histogram(
        "andon_commit_seconds",
        "Time to commit one batch (log, records, outbox) durably",
        buckets=COMMIT_BUCKETS,
        registry=None,
    )


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        position, rejections, queued = gw.counters()
        accepted = CounterMetricFamily(
            "andon_log_entries", "Events, births and Wills accepted into the log"
        )
        accepted.add_metric([], position)
        yield accepted
        rejected = CounterMetricFamily(
            "andon_rejected", "Messages rejected (dead-lettered), by reason", labels=["reason"]
        )
        for reason, count in sorted(rejections.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield from gw.commit_seconds.collect()
        yield GaugeMetricFamily(
            "andon_queue_depth", "Messages waiting for the worker", value=queued
        )
        yield from self._plant(gw.view())
        yield from self._store(read_plant(gw.config, _read_store, ([], 0)), gw.webhooks_given_up)

    def _plant(self, view: dict) -> Iterator[Metric]:
        online = GaugeMetricFamily("andon_boards_online", "Boards online, by line", labels=["line"])
        for line in view["lines"]:
            online.add_metric([line["id"]], sum(s["online"] for s in line["stations"]))
        yield online
        yield GaugeMetricFamily(
            "andon_open_alerts", "Alerts open now", value=len(view.get("alerts", []))
        )
        yield GaugeMetricFamily("andon_open_calls", "Calls open now", value=len(view["calls"]))

    def _store(self, stored: tuple[list[tuple], int], given_up: int) -> Iterator[Metric]:
        labels = ["board", "line", "station"]
        outbox = GaugeMetricFamily(
            "andon_board_outbox", "Events in a board's outbox", labels=labels
        )
        rssi = GaugeMetricFamily("andon_board_rssi_dbm", "A board's Wi-Fi RSSI", labels=labels)
        heap = GaugeMetricFamily(
            "andon_board_heap_free_bytes", "A board's free heap", labels=labels
        )
        telemetry, pending = stored
        for board, line, station, message in telemetry:
            health = json.loads(message)
            where = [board, line, station]
            outbox.add_metric(where, health["outbox"])
            heap.add_metric(where, health["heap_free"])
            if health.get("rssi") is not None:
                rssi.add_metric(where, health["rssi"])
        yield from (outbox, rssi, heap)
        yield GaugeMetricFamily(
            "andon_webhooks_pending", "Webhook deliveries still to make", value=pending
        )
        failed = CounterMetricFamily("andon_webhooks_failed", "Webhook deliveries given up")
        failed.add_metric([], given_up)
        yield failed


def _read_store(db: Reader) -> tuple[list[tuple], int]:
    """Each board's latest telemetry row, and how many webhook deliveries are still to make."""
    telemetry = db.execute(
        "SELECT board, line, station, message FROM telemetry ORDER BY board"
    ).fetchall()
    (pending,) = db.execute(
        "SELECT count(*) FROM outbox WHERE channel='webhook' AND sent IS NULL AND failed IS NULL"
    ).fetchone()
    return telemetry, pending


def metrics_app(gateway: Gateway):
    """The ASGI app that serves /metrics for `gateway`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    return make_asgi_app(registry)
