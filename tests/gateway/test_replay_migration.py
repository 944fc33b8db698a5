"""A database written by the previous version (log, records, a version-1 projection) is
rebuilt under today's rules: the log is the truth, an old snapshot is not restored."""

from __future__ import annotations

from andon.runtime.service import rebuild
from andon.runtime.store import Entry, Projection, SqliteStore
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
