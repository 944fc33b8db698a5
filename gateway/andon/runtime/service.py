"""The gateway: MQTT in and out (paho-mqtt 2.x), the core in between, SQLite or PostgreSQL
beneath.

Persist before ack. The boards' messages are read by the intake, a process of its own on the
gateway's persistent session (`andon.runtime.intake`), and queued here by its reader thread;
one worker thread takes whatever is queued (up to `batch_max`), validates it, logs the new
events, applies them to the core and commits the lot in one durable transaction. Only then
are the messages acknowledged to the broker (through the intake, manual acks), the boards
whose progress moved told it (`…/ack`) and the effects published, on the gateway's own
connection (`andon.runtime.netloop`). A crash anywhere before the commit loses nothing: the
broker still holds the unacknowledged messages for the persistent session and delivers them
again, and a board's progress makes a second delivery a no-op.

Each board's events apply in seq order (the store holds one that comes after a gap until the
gap fills or is declared lost), and no single message can stop the worker: one that fails
past validation is dead-lettered and the batch done again without it (`_process`).

The worker is the only thread that touches the core and the store (but for the committer's
writes of a commit it handed off), so timers (`advance`) are serialized with events. The core
fires each timer at its own deadline whatever the moment it is advanced, so the log alone
rebuilds the same state.

A batch is whatever was queued when the worker came for it: under a burst it grows (one fsync
for thousands of events) and only the last state of each retained topic and the last version of
each record is written and published; at a trickle it is one event, committed at once. On
PostgreSQL a commit's writes are the server's work: while another batch waits, the worker hands
the commit to the store's committer thread and applies that batch meanwhile, and acknowledges
and publishes each batch, in order, once its commit is made (`_finish_commits`). A refused
commit drops the batches built on it (`_fenced`).
Alerts routed to webhooks (`[alerts.routes]`) are also POSTed, by `andon.runtime.webhook` from its
own thread; its outcomes come back through the same queue, so the worker alone writes the store.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from functools import partial
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from andon import contract
from andon.config import PlantConfig
from andon.core import Record
from andon.core.effects import (
    RECORDS,
    Alert,
    Effect,
    LineChanged,
    RecordEffect,
    Replenish,
    StationChanged,
)
from andon.core.state import dump
from andon.runtime.intake import Inbound, Intake, Lost, topic_of
from andon.runtime.logs import log_effects
from andon.runtime.netloop import BufferedClient, NetworkLoop, prepare
from andon.runtime.replay import (
    SNAPSHOT_EVERY,
    LogFollower,
    rebuild,
    record_of,
    restorable,
    wall_ms,
)
from andon.runtime.store import (
    DEFAULT_OUTBOX_CAP,
    FLAG_REDATED,
    GAP,
    OPERATOR,
    Entry,
    Fenced,
    Progress,
    Projection,
    SeqJump,
    Store,
    Transaction,
    open_store,
)
from andon.runtime.webhook import Delivery, Outcome, WebhookSender

if TYPE_CHECKING:
    from andon.runtime.ownership import LineLeases

log = logging.getLogger("andon.gateway")

BATCH_MAX = 5000  # messages per commit: bounds a batch under a burst, amortizes the fsync
# Group commit under a backlog. When BACKLOG_BATCH or more messages were waiting for the worker
# at the start of two batches in a row, it is behind: it then gathers for up to
# BACKLOG_GATHER_S more, while the network thread has the interpreter to itself, so one fsync
# and one state publish per station cover many more events. One slow commit (a disk stall)
# leaves a single backlog, which the next batch clears at once, without waiting; at a trickle
# nothing is waiting and nothing waits.
BACKLOG_BATCH = 100
BACKLOG_GATHER_S = 0.15
# A batch committed in the background is acknowledged and published as soon as its commit is
# made, seen between this many messages of the next batch: not after that whole batch.
FINISH_EVERY = 256


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False
    outbox_id: int | None = None  # set: mark it sent once the broker has it


def entry_of(received: int, line: str, station: str, message: contract.UplinkMessage) -> Entry:
    at, redated = contract.dating(
        getattr(message, "ts", None), getattr(message, "age", None), received
    )
    common = dict(
        received=received,
        line=line,
        station=station,
        board=message.board,
        boot=message.boot,
        at=at,
        message=message.model_dump_json(),
        flags=FLAG_REDATED if redated else 0,
    )
    if isinstance(message, contract.Birth | contract.Will):
        kind = "birth" if message.online else "will"
        return Entry(leaf="status", kind=kind, **common)
    return Entry(leaf="evt", kind=message.kind, seq=message.seq, base=message.base, **common)


def outgoing_of(
    site: str, effect: StationChanged | LineChanged | Replenish | Alert, zone: tzinfo = UTC
) -> Outgoing:
    """The message an effect becomes (retained state, or a trigger/alert for the outbox)."""
    if isinstance(effect, StationChanged):
        topic = contract.Station(site, effect.line, effect.station).topic("state")
        payload = contract.station_state(effect.state, effect.call, effect.since, effect.material)
        return Outgoing(topic, payload, retain=True)
    if isinstance(effect, LineChanged):
        payload = contract.line_state(
            effect.state, list(effect.stopped), list(effect.called), effect.since
        )
        return Outgoing(contract.line_state_topic(site, effect.line), payload, retain=True)
    if isinstance(effect, Replenish):
        fields = asdict(effect)
        del fields["site"]
        return Outgoing(contract.replenish_topic(site, effect.part), contract.encode(fields))
    payload = alert_payload(effect, zone)
    return Outgoing(contract.alert_topic(site), contract.encode(payload))


def alert_payload(alert: Alert, zone: tzinfo) -> dict:
    """What an alert says on MQTT and to a webhook: enough for a pager to open and close a
    ticket (the alert's and the call's ids) and for a person to read (plant-local time)."""
    local = datetime.fromtimestamp(alert.ts / 1000, zone).isoformat(timespec="seconds")
    return {
        "id": alert.id,
        "kind": alert.kind,
        "site": alert.site,
        "line": alert.line,
        "station": alert.station,
        "call": alert.call,
        "cause": alert.cause,
        "tier": alert.tier,
        "to": alert.to,
        "opened": alert.opened,
        "acknowledged": alert.acknowledged,
        "text": alert.text,
        "ts": alert.ts,
        "local_time": local,
        **alert.extra,
    }


class _Stop:
    """Queue marker: finish what came before, then stop."""


class _Connected:
    """Queue marker: (re)connected, publish what the broker must hold."""


@dataclass(frozen=True)
class _Sent:
    mid: int


@dataclass(frozen=True)
class _Owned:
    """Queue marker: the lines this gateway owns now, with their lease epochs."""

    epochs: dict[str, int]


@dataclass(frozen=True)
class _Operate:
    """An operator's action from the console, and where its answer goes."""

    op: contract.Operator
    answer: Future


@dataclass(frozen=True)
class _Retained:
    """A retained downlink the broker held when the gateway subscribed: its or a stranger's."""

    topic: str


class _Poisoned(Exception):
    """One input failed past validation (storing or applying it): the batch is rolled back and
    done again without it. `key` names a held event (board, seq), else it is the message's."""

    def __init__(self, reason: str, exc: BaseException, key: tuple[str, int] | None = None):
        super().__init__(f"{reason}: {type(exc).__name__}: {exc}")
        self.rejected = contract.Rejected(reason, f"{type(exc).__name__}: {exc}")
        self.key = key
        self.entry: Entry | None = None
        self.index = -1


class RejectionLog:
    """A flood of rejections writes one line per reason per interval: the first rejection of a
    reason is logged at once with its detail, the rest are counted and summed up in one line."""

    def __init__(self, interval_s: float, clock=time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._open: dict[str, list] = {}  # reason -> [window start, rejections not logged]

    def note(self, reason: str, topic: str, detail: str) -> None:
        self.flush()
        window = self._open.get(reason)
        if window is None:
            log.warning("rejected %s on %.200s: %.300s", reason, topic, detail)
            self._open[reason] = [self._clock(), 0]
        else:
            window[1] += 1

    def flush(self) -> None:
        """Sum up the windows that are over."""
        now = self._clock()
        for reason, (start, count) in list(self._open.items()):
            if now - start >= self.interval_s:
                if count:
                    log.warning(
                        "rejected %d more %s message(s) in %.0f s", count, reason, now - start
                    )
                del self._open[reason]


class Gateway:
    """One gateway: `start()`, then `stop()`; `running` turns False if it fails."""

    def __init__(
        self,
        config: PlantConfig,
        store: Store | None = None,
        *,
        batch_max: int = BATCH_MAX,
        snapshot_every: int = SNAPSHOT_EVERY,
        webhook_backoff_s: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.config = config
        self._zone = config.zone
        settings = config.gateway
        self.name = name or settings.name
        self.store = store or open_store(config, self.name or settings.client_id)
        self.batch_max = batch_max
        self.snapshot_every = snapshot_every
        self.rejected: dict[str, int] = self.store.rejections()
        self._rejection_log = RejectionLog(settings.rejections_log_interval_s)
        self._gap_timeout_ms = settings.gap_timeout_s * 1000
        # per board, looked up for every message (config.station_of_board is slower)
        self._places = {s.board: (line.id, s.id) for line, s in config.stations()}
        self._ack_topics = {
            board: contract.Station(config.site, *where).topic("ack")
            for board, where in self._places.items()
        }
        self._outbox_caps: dict[str, int] = {}  # from each board's birth
        self._poisoned: set[tuple[str, int]] = set()  # events that failed to apply
        self._jumps_told: dict[str, int] = {}  # board -> the progress a seq_jump alert named
        self.failed: BaseException | None = None
        self._state = threading.Lock()  # the worker changes the plant under it; view() reads
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._watchers: list[Callable[[], None]] = []  # told after each change (the live board)
        self._behind = False  # the last batch found a backlog waiting (see BACKLOG_BATCH)
        # batches whose commit is in flight, in order: (the commit, what follows it, the batch)
        self._unfinished: deque[tuple[Future | None, Callable[[], None], list]] = deque()
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox id, until its PUBACK
        self._worked = time.monotonic()  # when the worker last took or finished work (health)
        self._birth = b""  # the gateway birth last published: its echo ends the retained scan
        self._clock = self.store.clock()
        # one of several gateways (named, on PostgreSQL) has a status topic of its own
        self._presence = contract.Presence(config.site, self.name if config.store.url else None)
        self._taken: dict[str, int] = {}  # lines taken, their owner topic not yet published
        self._announcing = threading.Lock()  # the worker takes lines; two threads announce
        self._client = self._mqtt_client()
        self._network = NetworkLoop(self._client)
        # the boards' messages come through a process of its own, on the persistent session
        self._intake = Intake(
            config.broker.model_dump(),
            self._session_id,
            self._inbox.put,
            self._on_intake_up,
        )
        self._intake_up = False  # it is subscribed to the boards: the gateway may announce
        self._worker = threading.Thread(target=self._run, name="andon-worker", daemon=True)
        # webhook outcomes come back through the inbox: only the worker writes the store
        self._webhooks = WebhookSender(
            self._inbox.put,
            tries=1 + config.escalation.webhook_retries,
            backoff_s=webhook_backoff_s,
        )
        self.webhooks_given_up = self.store.webhooks_given_up()
        # On PostgreSQL, lines are owned through leases and this gateway serves its own only;
        # None: it serves every line (SQLite: one gateway).
        self._owned: set[str] | None = None
        self._leases: LineLeases | None = None
        self._follower: LogFollower | None = None
        if config.store.url:
            from andon.runtime.ownership import LineLeases  # psycopg only where it is used

            self._owned = set()
            self._follower = LogFollower(config)
            self._leases = LineLeases(
                config.store.url,
                self.store.owner,
                config.line_groups(),
                config.gateway.lease_s,
                lambda epochs: self._inbox.put(_Owned(epochs)),
            )
        from andon.runtime.metrics import commit_histogram  # not for `andon status`'s import

        self.commit_seconds = commit_histogram()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Rebuild the state, catch up with timers that came due while down, then connect."""
        started = time.perf_counter()
        if self._leases is not None:
            self._leases.start()  # owns its first lines now; the worker rebuilds them
        served = self._served_config()
        if restorable(served, self.store):
            self.plant, self._pos, self._since_snapshot = rebuild(served, self.store)
        else:  # a projection of another version or plant: states, ids and records anew
            log.warning("the stored projection is of another version or plant: replaying all")
            self._rebuild(rewrite={line.id for line in served.lines})
        log.info(
            "state rebuilt at log position %d (%d entries replayed) in %.2f s",
            self._pos,
            self._since_snapshot,  # the next projection bounds the replay again
            time.perf_counter() - started,
        )
        if self._leases is None:
            self._intake.subscribe(contract.board_subscriptions())
        else:  # the lines it took at once: the intake's first topics
            self._own(dict(self._leases.owned))
        for row in self.store.pending_webhooks():  # before the first tick adds its own
            self._webhooks.submit(Delivery(*row))
        self._process([])  # timers that came due while the gateway was down
        self._webhooks.start()
        self._intake.start()
        broker = self.config.broker
        self._client.connect_async(broker.host, broker.port, keepalive=broker.keepalive)
        self._network.start()
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what was received, save the projection, publish offline status, disconnect."""
        self._webhooks.stop()  # first: the worker then records the last outcome
        self._intake.stop(timeout)  # and what the intake read is queued before the stop
        if self._worker.is_alive():
            self._inbox.put(_Stop())
            self._worker.join(timeout)
        if self.failed is None:
            with contextlib.suppress(Fenced), self.store.transaction() as tx:
                self._save_projection(tx)
        if self._leases is not None:
            self._leases.stop()
        offline = self._client.publish(
            self._presence.status_topic, contract.GATEWAY_WILL, qos=1, retain=True
        )
        if self._client.is_connected():
            offline.wait_for_publish(timeout)
        self._network.stop(timeout)
        self.store.close()
        if self._follower is not None:
            self._follower.close()

    @property
    def running(self) -> bool:
        """The worker runs: False after `stop()` or a failure (see `failed`)."""
        return self._worker.is_alive()

    def view(self) -> dict:
        """The plant as the worker last left it (timers it has fired, events it has applied),
        from any thread: for the HTTP API. One gateway of several: the whole plant, as the
        shared log has it (its lines' owners committed it)."""
        if self._follower is not None:
            return self._follower.view()
        with self._state:
            return self.plant.view()

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed()` (from the worker: it must only hand over) after each commit that
        changed the plant; the live board pushes the new view then."""
        self._watchers.append(changed)

    def operate(self, op: contract.Operator, by: str) -> Future:
        """An operator's action, done by the worker: logged, applied and committed like an
        event. The future's result is None when done, else why it was refused."""
        answer: Future = Future()
        self._inbox.put(_Operate(op.model_copy(update={"by": by}), answer))
        return answer

    def counters(self) -> tuple[int, dict[str, int], int]:
        """Log position, rejections by reason, messages queued: for /metrics."""
        with self._state:
            return self._pos, dict(self.rejected), self._inbox.qsize()

    def health(self) -> dict:
        """`ok`, or the `reasons` it is not: the worker stopped (a store that failed stops
        it), the broker is unreachable, the intake is not subscribed to the boards' topics, or
        messages wait while the worker makes no progress."""
        with self._state:
            rejected = sum(self.rejected.values())
        reasons = []
        if not self.running:
            failed = f": {self.failed!r}" if self.failed is not None else ""
            reasons.append(f"the worker is not running{failed}")
        if not self._client.is_connected():
            reasons.append("the broker is unreachable")
        elif not self._intake_up:
            reasons.append("the intake is not subscribed to the boards (connecting)")
        waiting, idle = self._inbox.qsize(), time.monotonic() - self._worked
        if waiting and self.running and idle > self.config.gateway.stall_s:
            reasons.append(f"the worker has stalled: {waiting} waiting, none done in {idle:.0f} s")
        return {
            "ok": not reasons,
            "reasons": reasons,
            "running": self.running,
            "broker_connected": self._client.is_connected(),
            "intake_up": self._intake_up,
            "log_position": self._pos,
            "rejected": rejected,
        }

    # --- MQTT (the network thread: enqueue only) ------------------------------------------

    @property
    def _session_id(self) -> str:
        """The client id of the boards' persistent session (one per gateway), its intake's."""
        client_id = self.config.gateway.client_id
        return f"{client_id}-{self.name}" if self.name else client_id

    def _mqtt_client(self) -> BufferedClient:
        """The gateway's own connection: its status, the downlinks it publishes and scans.
        The boards' messages come through the intake's, on the persistent session."""
        client = BufferedClient(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{self._session_id}-out"
        )
        prepare(client, self.config.broker.model_dump())
        client.will_set(self._presence.status_topic, contract.GATEWAY_WILL, qos=1, retain=True)
        # No cap on QoS 1 messages awaiting their PUBACK: with a cap, paho scans every one of
        # them at each PUBACK (quadratic under load); a batch bounds what we publish anyway.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _userdata, _flags, reason, _props) -> None:
        """Read the retained downlinks the broker holds, until the echo of our next birth."""
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        client.subscribe([(topic, 0) for topic in self._owned_topics()])
        if self._intake_up:
            self._announce(reconnected=True)
        self._inbox.put(_Connected())

    def _on_intake_up(self, up: bool) -> None:
        """The intake is subscribed to the boards (again, or to a taken line's too), or went
        down. Either this or `_on_connect` comes last, and sees the other's state: one of them
        announces."""
        reconnected = not self._intake_up  # else only its subscriptions changed: a take
        self._intake_up = up
        if up and self._client.is_connected():
            self._announce(reconnected)

    def _announce(self, reconnected: bool) -> None:
        """A fresh birth: the boards resend at once what is not acknowledged (the retained
        scan after a connect ends with its echo). And the owner topic of the lines taken since
        the last one, now that the intake is subscribed to them: their boards follow this
        gateway from now on (and resend to it)."""
        with self._announcing:
            self._birth = contract.gateway_birth(wall_ms())
            for topic in self._presence.birth_topics(reconnected):  # the echo's last
                self._client.publish(topic, self._birth, qos=1, retain=True)
            for topic, owner in self._presence.owners(self._taken, wall_ms()):
                self._client.publish(topic, owner, qos=1, retain=True)
            self._taken = {}

    @staticmethod
    def _owned_topics() -> list[str]:
        return [*contract.downlink_subscriptions(), contract.GATEWAY_STATUS]

    def _on_message(self, client: mqtt.Client, _userdata, msg: mqtt.MQTTMessage) -> None:
        """Of the gateway's own topics, only what the broker held retained goes to the worker
        (the rest is its own echo)."""
        topic = topic_of(msg)
        if topic == contract.GATEWAY_STATUS:
            if not msg.retain and msg.payload == self._birth:  # every retained one came before
                client.unsubscribe(self._owned_topics())
        elif msg.retain and msg.payload:
            self._inbox.put(_Retained(topic))

    def _on_publish(self, _client, _userdata, mid: int, _reason, _props) -> None:
        """Set only while a trigger or alert awaits its PUBACK, to mark it sent (`_publish`):
        paho builds a reason code and properties for every publish it reports, each state and
        ack at QoS 0 too. The worker drops the mids that are not in its outbox."""
        self._inbox.put(_Sent(mid))

    # --- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._serve_once():
                self._worked = time.monotonic()
        except BaseException as exc:  # the core and the store may disagree now: stop
            log.critical("the gateway stops: %r", exc, exc_info=True)
            self.failed = exc

    def _serve_once(self) -> bool:
        """Take one batch (or wait for the next timer); False once told to stop."""
        batch: list = []
        try:
            if self._inbox.empty():  # nothing to work on while a commit is made: wait for it
                with self._state:
                    self._finish_commits()
            item = self._next(self._timeout())
            self._worked = time.monotonic()  # it took work: a stall counts from here
            batch = [] if item is None else self._gather(item)
            with self._state:
                self._process(batch)
        except Fenced as exc:
            self._fenced(exc, batch)
        self._rejection_log.flush()
        return not (batch and isinstance(batch[-1], _Stop))

    def _gather(self, first: object) -> list:
        """`first` and what is waiting after it; when the worker is behind, also what arrives
        within the gather time."""
        batch = [first]
        self._take(batch)
        behind = len(batch) >= BACKLOG_BATCH
        if behind and self._behind:
            self._take(batch, until=time.monotonic() + BACKLOG_GATHER_S)
        self._behind = behind
        return batch

    def _take(self, batch: list, until: float | None = None) -> None:
        """Add queued messages to `batch` (and those that arrive until `until`)."""
        while len(batch) < self.batch_max and not isinstance(batch[-1], _Stop):
            wait = 0.0 if until is None else until - time.monotonic()
            try:
                batch.append(
                    self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
                )
            except queue.Empty:
                return

    def _next(self, timeout: float | None) -> object | None:
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _timeout(self) -> float | None:
        """Until the next timer of the core, or the next gap's timeout."""
        deadlines = [
            d
            for d in (
                self.plant.next_deadline(),
                self.store.next_gap_deadline(self._gap_timeout_ms),
            )
            if d is not None
        ]
        return max(0.0, (min(deadlines) - wall_ms()) / 1000) if deadlines else None

    def _now(self) -> int:
        self._clock = max(self._clock, wall_ms())
        return self._clock

    def _process(self, batch: list) -> None:
        """Commit one batch (an empty one: the timers), then acknowledge and publish.

        A message that fails past validation (its storing or applying raised) is poison: the
        whole transaction rolls back, the core is rebuilt from the store, and the batch is done
        again with that message dead-lettered. The core is never left half-changed, and the
        normal path pays nothing for it."""
        lost = next((m for m in batch if isinstance(m, Lost)), None)
        if lost is not None:
            raise lost
        # these read what is committed, and publish after it: nothing may be in flight
        settled = any(isinstance(m, _Owned | _Connected | _Retained | _Stop) for m in batch)
        if settled:
            self._finish_commits()
        for owned in (m for m in batch if isinstance(m, _Owned)):
            self._own(owned.epochs)
        messages = [m for m in batch if isinstance(m, Inbound)]
        acked = (self._in_flight.pop(m.mid, None) for m in batch if isinstance(m, _Sent))
        sent = [outbox_id for outbox_id in acked if outbox_id is not None]
        if not self._in_flight:
            self._client.on_publish = None
        outcomes = [m for m in batch if isinstance(m, Outcome)]
        operations = [m for m in batch if isinstance(m, _Operate)]
        poison: dict[int, contract.Rejected] = {}  # message index -> why
        letters: list[tuple[str, bytes, contract.Rejected]] = []  # held events that failed
        while True:
            try:
                done = self._commit(batch, messages, sent, outcomes, operations, poison, letters)
                break
            except _Poisoned as p:
                log.error("poison message dead-lettered, batch done again: %s", p)
                self._isolate(p, poison, letters)
                self.plant, self._pos, _ = rebuild(self._served_config(), self.store)
        if done is not None:
            in_flight, *committed = done
            finish = partial(self._committed, messages, operations, *committed)
            self._unfinished.append((in_flight, finish, batch))
        # the commit just handed off stays in flight while the next batch is worked on
        self._finish_commits(keep=0 if settled else 1)
        retained = [item.topic for item in batch if isinstance(item, _Retained)]
        if retained:
            self._clear_strangers(retained)
        if any(isinstance(m, _Connected) for m in batch):
            self._republish()

    def _committed(
        self,
        messages: list[Inbound],
        operations: list[_Operate],
        began: float,
        outgoing: list[Outgoing],
        deliveries: list[Delivery],
        touched: dict[str, Progress],
        rejected: list[tuple[str, str, str]],
        refusals: list[str | None],
        changed: bool,
    ) -> None:
        """A batch is committed: acknowledge it, publish, post, answer, count."""
        self.commit_seconds.observe(time.perf_counter() - began)
        self._intake.ack([m.mid for m in messages if m.qos])
        self._publish(outgoing + self._acks(touched))
        self._submit(deliveries)
        for o, refusal in zip(operations, refusals, strict=True):
            o.answer.set_result(refusal)
        if changed:
            self._changed()
        for reason, topic, detail in rejected:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self._rejection_log.note(reason, topic, detail)

    def _finish_commits(self, keep: int = 0, wait: bool = True) -> None:
        """Finish the batches committed, in order: those whose commits are made, and while
        more than `keep` are left (and `wait`), the next, once its commit is made."""
        while self._unfinished:
            in_flight, finish, _ = self._unfinished[0]
            made = in_flight is None or in_flight.done()
            if not made and (not wait or len(self._unfinished) <= keep):
                return
            if in_flight is not None:
                in_flight.result()  # its failure: Fenced, or the worker stops
            self._unfinished.popleft()
            finish()

    def _isolate(self, p: _Poisoned, poison: dict, letters: list) -> None:
        """What the next try leaves out: the held event (released as lost, dead-lettered), or
        the message. A failure no message or event can be blamed for (a gap record that fails
        to apply) stops the worker rather than retrying for ever."""
        if p.key is None:
            if p.index < 0 or p.index in poison:
                raise p.__cause__ or p
            poison[p.index] = p.rejected
            return
        if p.key in self._poisoned:
            raise p.__cause__ or p
        self._poisoned.add(p.key)
        entry = p.entry
        topic = contract.Station(self.config.site, entry.line, entry.station).topic(entry.leaf)
        letters.append((topic, entry.message.encode(), p.rejected))

    def _commit(
        self,
        batch: list,
        messages: list[Inbound],
        sent: list[int],
        outcomes: list[Outcome],
        operations: list[_Operate],
        poison: dict[int, contract.Rejected],
        letters: list[tuple[str, bytes, contract.Rejected]],
    ):
        """One try at the batch: None when there was nothing to do."""
        now = self._now()
        effects = self.plant.advance(now)  # timers due before this batch come first
        gap_due = self.store.next_gap_deadline(self._gap_timeout_ms)
        expire = gap_due is not None and gap_due <= now
        if not (messages or sent or outcomes or operations or effects or expire or not batch):
            return None
        self._batch_rejected: list[tuple[str, str, str]] = []
        began = time.perf_counter()
        # the commit may finish in the background while another batch waits to be worked on
        with self.store.transaction(background=not self._inbox.empty()) as tx:
            tx.poisoned = self._poisoned
            for topic, payload, why in letters:
                self._reject(tx, topic, payload, now, why)
            for index, m in enumerate(messages):
                if index % FINISH_EVERY == 0:
                    self._finish_commits(wait=False)
                if index in poison:
                    self._reject(tx, m.topic, m.payload, now, poison[index])
                    continue
                try:
                    effects += self._accept(tx, m, now)
                except _Poisoned as p:
                    p.index = index
                    raise
            if expire:
                effects += self._apply_logged(tx.expire(now, self._gap_timeout_ms), None, None)
            refusals = [self._operate(tx, o.op, now, effects) for o in operations]
            outgoing, deliveries = self._persist_effects(tx, effects, now)
            tx.mark_sent(sent, now)
            given_up = self._record_outcomes(tx, outcomes, now)
            tx.set_clock(now)
            if self._since_snapshot >= self.snapshot_every:
                self._save_projection(tx)
        self.webhooks_given_up += given_up
        changed = bool(effects)
        return (
            tx.in_flight,
            began,
            outgoing,
            deliveries,
            tx.touched,
            self._batch_rejected,
            refusals,
            changed,
        )

    def _record_outcomes(self, tx: Transaction, outcomes: list[Outcome], now: int) -> int:
        """Store the webhooks' outcomes; how many were given up."""
        for o in outcomes:
            delivered, gave_up = (now if o.delivered else None), (now if o.gave_up else None)
            tx.webhook_tried(o.delivery.id, o.delivery.attempts, delivered, gave_up)
        return sum(o.gave_up for o in outcomes)

    def _submit(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._webhooks.submit(delivery)

    def _accept(self, tx: Transaction, msg: Inbound, now: int) -> list[Effect]:
        """Validate one message, store it, and apply what it makes applicable (in seq order).
        Its effects. A failure past validation raises _Poisoned."""
        topic = msg.topic
        try:
            station, message = contract.decode_uplink(topic, msg.payload)
            line, station_id = self._where(station, message.board)
        except contract.Rejected as exc:
            self._reject(tx, topic, msg.payload, now, exc)
            return []
        except Exception as exc:  # a validator's bug: nothing was changed yet
            self._reject(tx, topic, msg.payload, now, _Poisoned("decode_error", exc).rejected)
            return []
        if self._owned is not None and line not in self._owned:
            # another gateway's line now: its board sends it again to that one
            return []
        try:
            if isinstance(message, contract.Telemetry):
                tx.telemetry(now, line, station_id, message.board, message.model_dump_json())
                return []
            entry = entry_of(now, line, station_id, message)
            logged = tx.append(entry, self._outbox_caps.get(message.board, DEFAULT_OUTBOX_CAP))
        except SeqJump as exc:
            self._reject(tx, topic, msg.payload, now, contract.Rejected("seq_jump", str(exc)))
            return self._jump_alert(line, station_id, message.board, tx, now)
        except Exception as exc:
            raise _Poisoned("store_error", exc) from exc
        if isinstance(message, contract.Birth):
            self._outbox_caps[message.board] = message.outbox_cap
        return self._apply_logged(logged, entry, message)

    def _apply_logged(
        self, logged: list[tuple[int, Entry]], own: Entry | None, message: object
    ) -> list[Effect]:
        """Apply the entries just logged, in order: the message's own (already decoded), held
        events it released, and gap records (each raises an events_lost alert)."""
        effects: list[Effect] = []
        for pos, entry in logged:
            self._pos = pos
            self._since_snapshot += 1
            try:
                if entry is own:
                    record = Record(entry.received, entry.line, entry.station, message, entry.at)
                else:
                    record = record_of(self.config.site, entry)
                effects += self.plant.apply(record)
            except Exception as exc:
                key = (entry.board, entry.seq) if entry.seq is not None else None
                poisoned = _Poisoned("apply_error", exc, key)
                poisoned.entry = entry
                raise poisoned from exc
        return effects

    def _jump_alert(
        self, line: str, station: str, board: str, tx: Transaction, now: int
    ) -> list[Effect]:
        """Tell people once per episode that a board's numbering ran past its outbox."""
        progress = tx.touched.get(board) or self.store.progress().get(board) or Progress(0, 0)
        if self._jumps_told.get(board) == progress.seq:
            return []
        self._jumps_told[board] = progress.seq
        text = (
            f"board {board} at {line}/{station} sent events numbered beyond its outbox after"
            f" seq {progress.seq}: they are rejected (events lost, or a forged sender)"
        )
        return [Alert(self.config.site, GAP, text, now, line, station, extra={"board": board})]

    def _operate(
        self, tx: Transaction, op: contract.Operator, now: int, effects: list[Effect]
    ) -> str | None:
        """Check an operator's action; log and apply it unless refused (why, then)."""
        refusal = self.plant.check(op)
        place = self._place_of(op) if refusal is None else None
        if place is None:
            return refusal or f"no call {op.call!r} nor card {op.card!r} in the plant"
        if self._owned is not None and place[0] not in self._owned:
            return f"line {place[0]} is served by another gateway: ask that one"
        line, station = place
        if op.action == "resync":
            tx.forget_progress(op.board)
            self._jumps_told.pop(op.board, None)
        message = op.model_dump_json()
        entry = Entry(now, line, station, op.by, 0, OPERATOR, op.action, now, message)
        [(self._pos, _)] = tx.append(entry)
        self._since_snapshot += 1
        effects += self.plant.apply(Record(now, line, station, op, now))
        return None

    def _place_of(self, op: contract.Operator) -> tuple[str, str] | None:
        """Where an action is logged: its board's, its call's station, or its card's post."""
        if op.board is not None:
            return self.config.station_of_board(op.board)
        if op.call is not None:
            call = self.plant.open_call(op.call) or self.store.record("call", op.call)
            return (call["line"], call["station"]) if call else None
        loop = self.config.loop_of_card(op.card or "")
        return (loop.post.line, loop.post.station) if loop else None

    def _changed(self) -> None:
        for changed in self._watchers:
            changed()

    def _where(self, station: contract.Station, board: str) -> tuple[str, str]:
        """The board's (line, station) from the configuration; a stranger or a spoof is rejected."""
        where = self._places.get(board)
        if where is None:
            raise contract.Rejected("unknown_board", f"board {board!r} is not configured")
        if (station.site, station.line, station.station) != (self.config.site, *where):
            raise contract.Rejected(
                "spoof", f"board {board!r} belongs at {'/'.join(where)}, not {station.topic('')}"
            )
        return where

    def _reject(
        self, tx: Transaction, topic: str, payload: bytes, now: int, exc: contract.Rejected
    ):
        """Dead-letter it; counted and logged once the batch is committed."""
        tx.dead_letter(now, topic, payload, exc.reason, exc.detail)
        self._batch_rejected.append((exc.reason, topic, exc.detail))

    def _persist_effects(
        self, tx: Transaction, effects: list[Effect], now: int
    ) -> tuple[list[Outgoing], list[Delivery]]:
        """Records and outbox rows, in the caller's transaction; what to publish and what to
        POST after it."""
        latest: dict[tuple, StationChanged | LineChanged] = {}  # retained: the last one counts
        records: dict[tuple[str, str], RecordEffect] = {}  # so does a record's
        outbox: list[Outgoing] = []
        deliveries: list[Delivery] = []
        for effect in effects:
            if isinstance(effect, StationChanged):
                latest[effect.line, effect.station] = effect
            elif isinstance(effect, LineChanged):
                latest[effect.line,] = effect
            elif isinstance(effect, RECORDS):
                records[effect.kind, effect.id] = effect
            else:
                out = outgoing_of(self.config.site, effect, self._zone)
                outbox_id = tx.outbox(out.topic, out.payload, now)
                outbox.append(Outgoing(out.topic, out.payload, outbox_id=outbox_id))
                for url in effect.webhooks if isinstance(effect, Alert) else ():
                    hook_id = tx.outbox(url, out.payload, now, channel="webhook")
                    deliveries.append(Delivery(hook_id, url, out.payload))
        for (kind, key), record in records.items():
            tx.record(kind, key, dump(record))
        retained = [outgoing_of(self.config.site, e) for e in latest.values()]
        # a burst logs each call's and line's last state in the batch, as it publishes them
        log_effects(
            [*records.values(), *latest.values(), *(e for e in effects if isinstance(e, Alert))]
        )
        return [*retained, *outbox], deliveries

    def _save_projection(self, tx: Transaction) -> None:
        if self._owned == set():  # one of several, serving no line: its plant holds nothing
            return
        tx.save_projection(Projection(self._pos, self._clock, self.plant.snapshot()))
        self._since_snapshot = 0

    def _acks(self, progress: dict) -> list[Outgoing]:
        return [
            Outgoing(self._ack_topics[board], contract.ack(board, p.boot, p.seq), retain=True)
            for board, p in progress.items()
        ]

    def _clear_strangers(self, topics: list[str]) -> None:
        """A retained downlink under the plant's site that the gateway does not publish itself
        (a station or line not in the plant, or the ack of a board it has no progress for) is
        cleared; its own it publishes again (`_republish`), over whatever another client left
        there. Another site's topics belong to that site's gateway (one broker, several)."""
        boards_at = {where: board for board, where in self._places.items()}
        progress = self.store.progress()
        lines = {line.id for line in self.config.lines}
        prefix = f"{contract.ROOT}/{self.config.site}/"
        for topic in topics:
            if not topic.startswith(prefix):
                continue  # another site's: its own gateway's to keep
            parts = topic[len(prefix) :].split("/")
            if len(parts) == 2:  # a line's state
                owned = parts[0] in lines
            elif len(parts) == 3:  # a station's state or ack
                board = boards_at.get((parts[0], parts[1]))
                owned = board is not None and (parts[2] == "state" or board in progress)
            else:
                owned = False
            if not owned:
                log.warning("cleared the retained message a stranger left on %.200s", topic)
                self._client.publish(topic, b"", qos=1, retain=True)

    def _republish(self) -> None:
        """After a (re)connect: the state, progress, and triggers/alerts not yet sent."""
        retained = [outgoing_of(self.config.site, e) for e in self.plant.states()]
        pending = set(self._in_flight.values())
        unsent = [
            Outgoing(t, p, outbox_id=i) for i, t, p in self.store.unsent() if i not in pending
        ]
        progress = {b: p for b, p in self.store.progress().items() if self._serves(b)}
        self._publish(retained + self._acks(progress) + unsent)

    # --- line ownership (several gateways on PostgreSQL) -----------------------------------

    def _served_config(self) -> PlantConfig:
        return self.config if self._owned is None else self.config.only_lines(self._owned)

    def _serves(self, board: str) -> bool:
        return self._owned is None or self._places[board][0] in self._owned

    def _topics(self, lines: Iterable[str]) -> list[str]:
        site = self.config.site
        leaves = ("evt", "status", "telemetry")
        return [f"{contract.ROOT}/{site}/{line}/+/{leaf}" for line in lines for leaf in leaves]

    def _own(self, epochs: dict[str, int]) -> None:
        """Serve these lines from now on: the store fences with their epochs, the plant is
        rebuilt from what the previous owners committed, the subscriptions follow. The lines
        taken under a new epoch get their owner topic once subscribed (`_announce`): their
        boards then send what is not acked at once."""
        if epochs == self.store.fence:
            return
        held = self.store.fence or {}
        with self._announcing:
            self._taken = {
                line: epoch
                for line, epoch in epochs.items()
                if line in self._taken or held.get(line) != epoch
            }
        lines = set(epochs)
        dropped, added = self._owned - lines, lines - self._owned
        self._owned = lines
        self.store.fence = dict(epochs)
        self.store.scope = ",".join(sorted(lines))
        self.store.reload()
        self._rebuild(rewrite=lines)  # the replay numbers every served line's calls anew
        if dropped:
            self._intake.unsubscribe(self._topics(sorted(dropped)))
        if added:  # subscribed, the intake says it is up again: then the birth (`_announce`)
            self._intake.subscribe(self._topics(sorted(added)))
        elif self._taken and self._intake_up and self._client.is_connected():
            self._announce(reconnected=False)  # taken again, subscribed all along
        if self._client.is_connected():
            self._republish()

    def _rebuild(self, rewrite: set[str] = frozenset()) -> None:
        """The plant of the lines served, from the store. The replay numbers calls anew over
        these lines: the stored records of the `rewrite` lines are replaced by its own."""
        replayed: dict[tuple[str, str], RecordEffect] = {}

        def keep(effects: list[Effect]) -> None:
            for e in effects:
                if isinstance(e, RECORDS) and getattr(e, "line", None) in rewrite:
                    replayed[e.kind, e.id] = e

        self.plant, self._pos, self._since_snapshot = rebuild(
            self._served_config(), self.store, on_effects=keep if rewrite else None
        )
        if rewrite:
            with self.store.transaction() as tx:
                tx.forget_records(rewrite)
                for (kind, key), record in replayed.items():
                    tx.record(kind, key, dump(record))

    def _fenced(self, exc: Fenced, batch: list) -> None:
        """A commit was refused: another gateway owns one of our lines now. What was applied
        since the last commit made (this batch, and those whose commits were in flight behind
        it) is dropped: the store's mirror is read again and the plant rebuilt from the store.
        The boards send those events again, to the line's new owner, since none was
        acknowledged to them; an operator's action is answered that it was not done."""
        log.warning("commit refused: %s", exc)
        batches = [earlier for _, _, earlier in self._unfinished]
        if all(earlier is not batch for earlier in batches):
            batches.append(batch)  # refused before it was handed off
        dropped = [m for earlier in batches for m in earlier]
        self._unfinished.clear()  # refused with it, or built on it
        with contextlib.suppress(Exception):
            self.store.settle()  # the commits queued behind it were not made either
        self._intake.ack([m.mid for m in dropped if isinstance(m, Inbound) and m.qos])
        for o in (m for m in dropped if isinstance(m, _Operate)):
            o.answer.set_result(f"not done, try again: {exc}")
        with self._state:
            self.store.reload()  # it knew of the refused commits as made
            self._rebuild()

    def _publish(self, messages: list[Outgoing]) -> None:
        """Triggers and alerts at QoS 1, tracked until the broker has them. A retained state or
        ack at QoS 0: only its last value counts, and a reconnect republishes them all
        (`_republish`), so a QoS 1 handshake for each would buy nothing but its cost."""
        for m in messages:
            if m.outbox_id is not None and self._client.on_publish is None:
                self._client.on_publish = self._on_publish  # set first: its PUBACK may be quick
            info = self._client.publish(
                m.topic, m.payload, qos=0 if m.retain else 1, retain=m.retain
            )
            if m.outbox_id is not None:
                self._in_flight[info.mid] = m.outbox_id
