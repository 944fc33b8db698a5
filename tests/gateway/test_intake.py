"""The gateway's intake rules (issue 10), on the real worker and store without a broker:
poison isolation, progress and seq order, dating, presence sessions, rejections, alerts."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from andon import contract
from andon.core import Plant
from andon.runtime import replay
from andon.runtime.service import RejectionLog
from andon.runtime.store import FLAG_REDATED, SqliteStore, _SqliteTransaction
from tests.gateway.intake_kit import BOARDS, NOW, Worker, event, plant_config, presence, topic


@pytest.fixture
def worker(tmp_path):
    w = Worker(plant_config(tmp_path))
    yield w
    w.close()


def dead_letters(w: Worker) -> list[tuple[str, str]]:
    return [(reason, t) for _, t, _, reason, _ in w.gateway.store.dead_letters()]


# --- poison isolation -----------------------------------------------------------------------


def _decode_fault(monkeypatch):
    real = contract.decode_uplink

    def decode(t, payload):
        if b'"seq": 2,' in payload:
            raise RuntimeError("validator bug")
        return real(t, payload)

    monkeypatch.setattr(contract, "decode_uplink", decode)


def _store_fault(monkeypatch):
    real = _SqliteTransaction.append

    def append(self, entry, jump_limit):
        if entry.seq == 2 and entry.board == BOARDS["S01"]:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(self, entry, jump_limit)

    monkeypatch.setattr(_SqliteTransaction, "append", append)


def _apply_fault(monkeypatch):
    real = Plant.apply

    def apply(self, record):
        effects = real(self, record)  # the core is changed, then it fails: half-done
        if getattr(record.message, "seq", None) == 2 and record.station == "S01":
            raise ZeroDivisionError("core bug")
        return effects

    monkeypatch.setattr(Plant, "apply", apply)


FAULTS = [
    (_decode_fault, "decode_error"),
    (_store_fault, "store_error"),
    (_apply_fault, "apply_error"),
]


@pytest.mark.parametrize("fault, reason", FAULTS, ids=["decode", "store", "apply"])
def test_a_poison_event_leaves_the_core_as_it_was_and_the_next_event_applies(
    worker, monkeypatch, fault, reason
):
    fault(monkeypatch)
    mids = worker.feed(event(1, "cord_pulled", station="S02"), event(2, "cord_pulled"))
    mids += worker.feed(event(3, "cord_pulled", station="S02"))  # the next valid message
    assert worker.intake.acked == mids  # the poison too: the broker does not deliver it again
    assert (reason, topic("S01")) in dead_letters(worker)
    assert worker.gateway.rejected[reason] == 1
    assert worker.station("S01")["state"] == "running"  # the half-applied pull is undone
    assert worker.station("S02")["state"] == "called"
    assert [c["station"] for c in worker.calls()] == ["S02"]
    assert worker.gateway.failed is None
    again = replay.rebuild(worker.config, worker.gateway.store, from_scratch=True)[0]
    assert again.snapshot()["stations"] == worker.gateway.plant.snapshot()["stations"]


def test_a_poison_event_held_behind_a_gap_is_released_as_lost_not_retried(worker, monkeypatch):
    _apply_fault(monkeypatch)
    worker.feed(event(1, "cord_pulled"))
    worker.feed(event(3, "cord_reset", base=1), event(4, "cord_pulled", base=1))  # both wait
    worker.feed(event(2, "cord_reset", base=1))  # fills the gap; 2 fails to apply
    assert worker.gateway.store.progress()[BOARDS["S01"]].seq == 4
    assert worker.station("S01")["state"] == "called"  # 1 pulled, 3 reset, 4 pulled again
    assert [c["resolution"] for c in worker.calls()] == ["cord_reset", None]
    lost = [a for a in worker.published("/alert") if a["kind"] == "events_lost"]
    assert [(a["first"], a["last"]) for a in lost] == [(2, 2)]


# --- numbers, dates, progress ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["boot", "seq", "base"])
@pytest.mark.parametrize("value", [2**53, 2**63, 2**64])
def test_numbers_past_2_53_are_rejected_and_the_gateway_goes_on(worker, field, value):
    t, payload = event(1)
    body = json.loads(payload) | {field: value}
    if field == "seq":
        body["base"] = 1
    worker.feed((t, json.dumps(body).encode()), event(1, station="S02"))
    assert dead_letters(worker) == [("schema", topic("S01"))]
    assert worker.station("S02")["state"] == "called"
    assert worker.station("S01")["state"] == "running"


@pytest.mark.parametrize(
    "dated",
    [
        lambda: 0,
        lambda: 1_764_190_000,
        lambda: replay.wall_ms() + 10 * 60_000,
        lambda: 32_503_680_000_000,
    ],
    ids=["1970", "seconds", "ahead", "3000"],
)
def test_an_event_dated_outside_the_window_is_dated_by_its_receipt_and_flagged(worker, dated):
    worker.feed(event(1, "cord_pulled", ts=dated()))  # now: a long run leaves NOW behind
    call = worker.calls()[0]
    received = worker.gateway.store.db.execute("SELECT received, at, flags FROM log").fetchone()
    assert received[1] == received[0] and received[2] == FLAG_REDATED
    assert call["opened"] == received[0]
    worker.tick()
    assert [a for a in worker.published("/alert") if a["kind"] == "escalation"] == []


def test_an_event_dated_within_the_window_keeps_its_date(worker):
    worker.feed(event(1, "cord_pulled", ts=NOW - 60_000))
    assert worker.gateway.store.db.execute("SELECT at, flags FROM log").fetchone() == (
        NOW - 60_000,
        0,
    )


def test_an_event_at_or_below_progress_is_acked_again_never_applied(worker):
    worker.feed(event(1, "cord_pulled", boot=2), event(2, "cord_reset", boot=2))
    worker.client.published.clear()
    worker.feed(event(1, "cord_pulled", boot=2))  # same boot, below progress
    worker.feed(event(2, "cord_pulled", boot=1))  # an older boot
    worker.feed(event(2, "cord_pulled", boot=2))  # another event under an id already stored
    assert worker.station("S01")["state"] == "running"
    assert len(worker.calls()) == 1
    assert [a["seq"] for a in worker.published("S01/ack")] == [2, 2, 2]  # acked again


def test_a_huge_base_does_not_move_the_ack_and_the_board_goes_on(worker):
    worker.feed(event(1, "cord_pulled"))
    worker.feed(event(10**6, "cord_reset", base=10**6))
    assert [a["seq"] for a in worker.published("S01/ack")] == [1]
    assert worker.gateway.store.progress()[BOARDS["S01"]].seq == 1
    assert ("seq_jump", topic("S01")) in dead_letters(worker)
    assert [a["kind"] for a in worker.published("/alert")] == ["events_lost"]
    worker.feed(event(2, "cord_reset", base=2))
    assert worker.station("S01")["state"] == "running"
    assert [a["seq"] for a in worker.published("S01/ack")] == [1, 2]


def resync(w: Worker, board: str) -> str | None:
    """An admin's resync, through the worker as the API submits it; the refusal, if any."""
    op = contract.Operator(action="resync", board=board, by="admin")
    future = w.gateway.operate(op, "admin")
    w.gateway._process([w.gateway._inbox.get_nowait()])
    return future.result(0)


def test_a_board_ahead_of_a_restored_database_is_heard_again_after_an_admins_resync(worker):
    # A database restored from an old backup: the board went on to seq 900 meanwhile, its
    # outbox holds 895..900. Its events are rejected as a jump until an admin resyncs it.
    worker.feed(event(1, "cord_pulled"), event(2, "cord_reset"))
    worker.feed(event(900, "cord_pulled", base=895))
    assert ("seq_jump", topic("S01")) in dead_letters(worker)
    assert worker.station("S01")["state"] == "running"
    assert resync(worker, "B-nobody") == "no board 'B-nobody' in the plant"
    assert resync(worker, BOARDS["S01"]) is None
    kinds = ["cord_pulled", "cord_reset"]
    worker.feed(*(event(seq, kinds[seq % 2], base=895) for seq in range(895, 901)))  # its outbox
    assert worker.published("S01/ack")[-1]["seq"] == 900  # below 895: done, as for a new board
    assert worker.station("S01")["state"] == "called"  # 895..900 applied in order: 900 pulled
    assert worker.gateway.store.progress()[BOARDS["S01"]].seq == 900
    actions = [e for e in worker.gateway.store.log() if e.leaf == "operator"]
    assert [json.loads(e.message)["board"] for e in actions] == [BOARDS["S01"]]
    plant, _, _ = replay.rebuild(worker.config, worker.gateway.store, from_scratch=True)
    plant.advance(worker.gateway.plant.now)
    assert plant.view() == worker.gateway.plant.view()  # the log replays it all the same


def test_a_jump_is_measured_against_the_outbox_its_birth_declares(worker):
    worker.feed(presence("S01", 1, True, outbox_cap=10))
    worker.feed(event(1, "cord_pulled"))
    worker.feed(event(12, "cord_reset", base=2))
    assert ("seq_jump", topic("S01")) in dead_letters(worker)


def test_a_will_with_a_bogus_boot_does_not_take_the_station_offline(worker):
    worker.feed(presence("S01", 7, True))
    worker.feed(presence("S01", 2**52, False))
    assert worker.station("S01")["online"] is True
    worker.feed(presence("S01", 7, False))  # the session's own Will
    assert worker.station("S01")["online"] is False
    worker.feed(presence("S01", 8, True))
    assert worker.station("S01")["online"] is True


def test_acks_go_only_to_boards_whose_progress_moved(worker):
    worker.feed(event(1, "cord_pulled"), event(1, station="S02"))
    worker.client.published.clear()
    worker.feed(event(3, "cord_reset", base=1), event(2, station="S02", kind="cord_reset"))
    assert worker.published("S01/ack") == []  # 3 waits for 2
    assert [a["seq"] for a in worker.published("S02/ack")] == [2]
    worker.feed(event(2, "cord_pulled", base=1))
    assert [a["seq"] for a in worker.published("S01/ack")] == [3]


def test_a_gap_times_out_into_an_events_lost_alert_and_the_waiting_events_apply(tmp_path):
    w = Worker(plant_config(tmp_path, gap_timeout_s=1))
    try:
        w.feed(event(1, "cord_pulled"))
        w.feed(event(3, "cord_reset", base=1))
        assert w.station("S01")["state"] == "called"
        deadline = w.gateway.store.next_gap_deadline(1000)
        assert deadline is not None
        w.gateway._clock = deadline  # the gateway's clock reaches the gap's timeout
        w.tick()
        assert w.station("S01")["state"] == "running"
        lost = [a for a in w.published("/alert") if a["kind"] == "events_lost"]
        assert [(a["first"], a["last"], a["board"]) for a in lost] == [(2, 2, BOARDS["S01"])]
        assert [a["seq"] for a in w.published("S01/ack")][-1] == 3
        kinds = [json.loads(e.message).get("kind", e.leaf) for e in w.gateway.store.log()]
        assert kinds == ["cord_pulled", "gateway", "cord_reset"]  # the gap record, in its place
        open_alerts = [(a["kind"], a["station"]) for a in w.gateway.view()["alerts"]]
        assert open_alerts == [("events_lost", "S01")]  # the plant holds it: status, API
        replayed = replay.rebuild(w.config, w.gateway.store, from_scratch=True)[0]
        assert replayed.snapshot() == w.gateway.plant.snapshot()  # the same order, the same alert
    finally:
        w.close()


# --- in-order application, whatever the arrival ----------------------------------------------

KINDS = ["cord_pulled", "cord_reset"]
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def arrivals(draw):
    """Each board's events 1..n (pull, reset, pull...), delivered in any order, some twice,
    in batches of any size."""
    messages = []
    for station in ("S01", "S02"):
        n = draw(st.integers(1, 8))
        for seq in range(1, n + 1):
            # nothing acked yet when sent: the board's outbox holds them all (base 1)
            messages.append(event(seq, KINDS[(seq - 1) % 2], station=station, base=1))
    extra = draw(st.lists(st.sampled_from(messages), max_size=6))
    order = draw(st.permutations(messages + extra))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    return messages, [b for b in batches if b]


@PROPERTY
@given(arrivals())
def test_calls_are_those_of_in_order_application_whatever_the_arrival(tmp_path_factory, case):
    messages, batches = case
    path = tmp_path_factory.mktemp("arrival")
    ordered = Worker(plant_config(path / "ordered"))
    shuffled = Worker(plant_config(path / "shuffled"))
    try:
        ordered.feed(*messages)
        for batch in batches:
            shuffled.feed(*batch)

        def calls(w: Worker) -> list[tuple]:
            """Each station's calls in order (the boards' calls interleave in any order)."""
            found = [(c["station"], c["cause"], c["resolved"], c["repeats"]) for c in w.calls()]
            return sorted((c for c in found), key=lambda c: c[0])

        assert calls(shuffled) == calls(ordered)
        assert shuffled.gateway.store.progress() == ordered.gateway.store.progress()
        logged = [json.loads(e.message)["seq"] for e in shuffled.gateway.store.log()]
        per_board = {
            b: [
                s
                for e, s in zip(shuffled.gateway.store.log(), logged, strict=True)
                if e.station == st_
            ]
            for st_, b in BOARDS.items()
        }
        assert all(seqs == sorted(seqs) for seqs in per_board.values())
    finally:
        ordered.close()
        shuffled.close()


# --- rejections and alerts reach people -------------------------------------------------------


def test_a_flood_of_rejections_logs_one_line_per_reason_per_interval(worker, caplog):
    clock = [0.0]
    worker.gateway._rejection_log = RejectionLog(60, clock=lambda: clock[0])
    junk = [(topic("S01"), b"not json")] * 500 + [(topic("S01"), b"{}")] * 300
    with caplog.at_level(logging.WARNING, logger="andon.gateway"):
        for i in range(0, len(junk), 100):
            worker.feed(*junk[i : i + 100])
        clock[0] = 61.0
        worker.gateway._rejection_log.flush()
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 4  # json and schema: the first one each, then one sum each
    assert "rejected 499 more json message(s) in 61 s" in lines
    assert "rejected 299 more schema message(s) in 61 s" in lines
    assert worker.gateway.rejected == {"json": 500, "schema": 300}


def test_every_alert_is_logged_in_one_line(worker, caplog):
    with caplog.at_level(logging.WARNING):
        worker.feed(presence("S01", 3, True))
        worker.feed(presence("S01", 3, False))
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert ")]
    assert alerts == [f"alert station_offline: board {BOARDS['S01']} at L1/S01 went offline"]


def test_the_store_keeps_the_redelivered_rejections_bounded(tmp_path):
    w = Worker(plant_config(tmp_path, dead_letters_max=50))
    try:
        for _ in range(5):
            w.feed(*[(topic("S01"), b"x" * 4096)] * 40)
        assert w.gateway.store.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone() == (50,)
        assert w.gateway.rejected == {"size": 200}
    finally:
        w.close()


def test_health_names_an_unreachable_broker_and_a_stalled_worker(worker, monkeypatch):
    health = worker.gateway.health()
    assert health["ok"] is False
    assert "the broker is unreachable" in health["reasons"]
    assert "the worker is not running" in health["reasons"]
    monkeypatch.setattr(worker.client, "is_connected", lambda: True)
    monkeypatch.setattr(type(worker.gateway), "running", property(lambda self: True))
    assert worker.gateway.health()["reasons"] == [
        "the intake is not subscribed to the boards (connecting)"
    ]
    worker.gateway._on_intake_up(True)  # what the intake says once subscribed
    assert worker.gateway.health()["ok"] is True
    worker.gateway._inbox.put(object())  # waiting, and the worker has done nothing since
    worker.gateway._worked -= worker.config.gateway.stall_s + 1
    assert any("stalled" in r for r in worker.gateway.health()["reasons"])


def test_replay_check_refuses_to_pass_without_a_projection(tmp_path):
    config = plant_config(tmp_path)
    store = SqliteStore(config.gateway.database)
    try:
        with pytest.raises(replay.NothingToCompare):
            replay.replay_check(config, store)
    finally:
        store.close()


def test_the_cli_replay_check_exits_2_without_a_projection_and_lists_rejections(tmp_path):
    from typer.testing import CliRunner

    from andon.cli import app

    plant = tmp_path / "plant.toml"
    plant.write_text(
        'site = "PLANT1"\n[gateway]\ndatabase = "andon.db"\n'
        '[[lines]]\nid = "L1"\nname = "L1"\n[[lines.stations]]\nid = "S01"\nname = "S01"\n'
        'board = "B0000000001"\nprofile = "esp32-devkitc"\n'
    )
    w = Worker(plant_config(tmp_path))  # the same database
    try:
        w.feed((topic("S01"), b"not json"), (topic("S01"), b"{}"), (topic("S01"), b"[]"))
    finally:
        w.close()
    runner = CliRunner()
    check = runner.invoke(app, ["replay", "--config", str(plant), "--check"])
    assert check.exit_code == 2
    assert "no projection is stored yet" in check.output
    listed = runner.invoke(app, ["rejections", "--config", str(plant), "--since", "1h"])
    assert listed.exit_code == 0, listed.output
    counts = [line.split()[:2] for line in listed.output.splitlines()[:2]]
    assert counts == [["json", "1"], ["schema", "2"]]
    assert listed.output.count(topic("S01")) == 3
