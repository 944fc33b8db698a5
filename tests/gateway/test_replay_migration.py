"""A database written by the previous version (log, records, a version-1 projection) is
rebuilt under today's rules: the log is the truth, an old snapshot is not restored."""

from __future__ import annotations

from andon.core.plant import SNAPSHOT_VERSION
from andon.runtime.replay import rebuild
from andon.runtime.service import Gateway
from andon.runtime.store import Entry, Projection, SqliteStore, records
from tests.gateway.corekit import SHIFT_START, plant_config

T = SHIFT_START + 3_600_000

# The log rows exactly as the previous version wrote them: at L1/S1 a quality call, then a
# cord pull (which that version took for a repeat of the quality call), two badge taps.
_EVENT = '{{"board":"B11","boot":1,"seq":{seq},"base":1,"ts":{ts},"age":null,{body}}}'
_ROWS = [
    ("call", '"kind":"call","input":"quali","reason":"quality"'),
    ("cord_pulled", '"kind":"cord_pulled","input":"cord"'),
    ("scan", '"kind":"scan","reader":"badge","role":"badge","uid":"AABBCCDD"'),
    ("scan", '"kind":"scan","reader":"badge","role":"badge","uid":"AABBCCDD"'),
]
_V1_SNAPSHOT = {"version": 1, "site": "P1", "now": T, "stations": [], "calls": []}


def _old_database(path) -> None:
    store = SqliteStore(path)
    with store.transaction() as tx:
        for seq, (kind, body) in enumerate(_ROWS, start=1):
            at = T + seq * 1000
            message = _EVENT.format(seq=seq, ts=at, body=body)
            tx.append(Entry(at, "L1", "S1", "B11", 1, "evt", kind, at, message, seq, 1))
        tx.save_projection(Projection(len(_ROWS), T + 5000, _V1_SNAPSHOT))
        tx.set_clock(T + 5000)
    store.close()


def test_an_old_database_replays_under_todays_rules(tmp_path):
    path = tmp_path / "andon.db"
    _old_database(path)
    store = SqliteStore(path)
    try:
        plant, pos, replayed = rebuild(plant_config(), store)
    finally:
        store.close()
    assert (pos, replayed) == (4, 4)  # the old projection was refused: the whole log replayed
    calls = {c["cause"]: c for c in plant.view()["calls"]}
    assert set(calls) == {"quality", "cord"}  # the pull is a call of its own now
    assert calls["cord"]["acknowledged_by"] == "Maria"
    assert calls["quality"]["acknowledged_by"] == "Maria"
    station = plant.view()["lines"][0]["stations"][0]
    assert station["state"] != "running"  # the cord is still pulled


def test_an_old_databases_records_are_written_again_as_todays_rules_number_them(tmp_path):
    path = tmp_path / "andon.db"
    _old_database(path)
    store = SqliteStore(path)
    with store.transaction() as tx:  # what the previous version recorded: one call, numbered so
        tx.record("call", "C-000001", {"id": "C-000001", "line": "L1", "cause": "quality"})
    store.close()
    config = plant_config(
        gateway={"database": str(path)}, broker={"host": "127.0.0.1", "port": 1}
    )  # no broker: the records are rewritten at start, before any connection
    gateway = Gateway(config)
    gateway.start()
    gateway.stop(timeout=2)
    calls = {c["id"]: c["cause"] for c in records(path, "call")}
    assert calls == {"C-L1-000001": "quality", "C-L1-000002": "cord"}
    assert SqliteStore(path).projection().snapshot["version"] == SNAPSHOT_VERSION
