"""A small plant and a record feeder for the core's tests (tests/gateway/test_core_*.py)."""

from __future__ import annotations

from andon import contract
from andon.config import PlantConfig
from andon.core import Plant, Record
from andon.core.effects import Effect

SHIFT_START = 1_772_431_200_000  # 2026-03-02 06:00 UTC: the start of L2's "day" shift
TAKT_MS = 60_000  # L2: 27000 s of working time (8 h minus two 15 min breaks) / 450 units
CARD1, CARD2 = "04000000000001", "04000000000002"
MARIA, JONAS, VISITOR = "AABBCCDD", "11223344", "99887766"
WEBHOOK = "http://hooks.example/andon"

_BOARDS = {("L1", "S1"): "B11", ("L1", "S2"): "B12", ("L1", "S3"): "B13"}
_BOARDS |= {("L2", "S1"): "B21", ("L2", "S2"): "B22"}


def _station(line: str, sid: str, readers: list[str]) -> dict:
    board = _BOARDS[line, sid]
    return {"id": sid, "name": sid, "board": board, "profile": "esp32-devkitc", "readers": readers}


def plant_config(
    offline_stops_line: bool = False, stop_s: int = 60, **sections: object
) -> PlantConfig:
    """L1 stops `stop_s` after an unresolved call; L2 at the end of the takt cycle (60 s takt).
    `sections` replace (or add) top-level sections of the plant file."""
    breaks = [{"start": "09:00", "end": "09:15"}, {"start": "12:00", "end": "12:15"}]
    shift = {"name": "day", "start": "06:00", "end": "14:00", "breaks": breaks, "demand": 450}
    plant = {
        "site": "P1",
        "gateway": {"offline_stops_line": offline_stops_line},
        "escalation": {
            "tiers": [
                {"after_s": 30, "to": "team_leader"},
                {"after_s": 120, "to": "supervisor"},
            ],
            "webhook": WEBHOOK,
        },
        "kanban_policy": {
            "overdue_factor": 2.0,
            "lost_after_s": 86_400,
            "safety_factor": 0.5,
            "demand_window_s": 86_400,
        },
        "lines": [
            {
                "id": "L1",
                "name": "Assembly",
                "stop": {"mode": "seconds", "seconds": stop_s},
                "stations": [
                    _station("L1", "S1", ["post", "badge"]),
                    _station("L1", "S2", ["badge"]),
                    _station("L1", "S3", ["receive"]),
                ],
            },
            {
                "id": "L2",
                "name": "Takt line",
                "stop": {"mode": "takt"},
                "shifts": [shift],
                "stations": [_station("L2", "S1", []), _station("L2", "S2", [])],
            },
        ],
        "kanban": [
            {
                "part": "P-1",
                "bin_qty": 10,
                "cards": [CARD1, CARD2],
                "supplier": "ACME",
                "lead_time_s": 3600,
                "post": "L1/S1",
                "receive": "L1/S3",
            }
        ],
        "badges": [
            {"uid": MARIA, "person": "Maria", "role": "team_leader"},
            {"uid": JONAS, "person": "Jonas", "role": "maintenance"},
            {"uid": VISITOR, "person": "Vera", "role": "visitor"},
        ],
    }
    return PlantConfig.model_validate({**plant, **sections})


class Feed:
    """Feeds a Plant with records from the boards, numbering each board's events."""

    def __init__(self, config: PlantConfig | None = None, plant: Plant | None = None) -> None:
        self.config = config or plant_config()
        self.plant = plant or Plant(self.config)
        self.records: list[Record] = []
        self._seq: dict[str, int] = {}

    def send(self, received: int, where: str, message) -> list[Effect]:
        line, station = where.split("/")
        record = Record.dated(received, line, station, message)
        self.records.append(record)
        return self.plant.apply(record)

    def event(self, t: int, where: str, kind: str, ts: int | None = -1, **fields) -> list[Effect]:
        """An event that happened at `t` (ts = t unless given) and arrives at `t`."""
        board = _BOARDS[tuple(where.split("/"))]
        seq = self._seq[board] = self._seq.get(board, 0) + 1
        ts = t if ts == -1 else ts
        payload = {"board": board, "boot": 1, "seq": seq, "base": seq, "ts": ts, "age": None}
        message = contract.decode_uplink(
            f"andon/v1/P1/{where}/evt", contract.encode({**payload, "kind": kind, **fields})
        )[1]
        return self.send(t, where, message)

    def pull(self, t: int, where: str = "L1/S1") -> list[Effect]:
        return self.event(t, where, "cord_pulled", input="cord")

    def reset(self, t: int, where: str = "L1/S1") -> list[Effect]:
        return self.event(t, where, "cord_reset", input="cord")

    def call(self, t: int, where: str = "L1/S1", reason: str = "quality") -> list[Effect]:
        return self.event(t, where, "call", input=reason[:5], reason=reason)

    def ack(self, t: int, where: str = "L1/S1") -> list[Effect]:
        return self.event(t, where, "ack", input="ack")

    def scan(self, t: int, uid: str, role: str, where: str = "L1/S1") -> list[Effect]:
        return self.event(t, where, "scan", reader=role, role=role, uid=uid)

    def cycle(self, t: int, where: str = "L2/S2") -> list[Effect]:
        return self.event(t, where, "cycle", input="cycle")

    def birth(
        self,
        t: int,
        boot: int,
        where: str = "L1/S2",
        near_full: bool = False,
        last_error: str | None = None,
    ) -> list[Effect]:
        board = _BOARDS[tuple(where.split("/"))]
        birth = contract.Birth(
            board=board, boot=boot, online=True, fw="0.1.0", reset_cause=1, outbox=0,
            outbox_cap=400, outbox_near_full=near_full, last_error=last_error,
        )  # fmt: skip
        return self.send(t, where, birth)

    def will(self, t: int, boot: int, where: str = "L1/S2") -> list[Effect]:
        board = _BOARDS[tuple(where.split("/"))]
        return self.send(t, where, contract.Will(board=board, boot=boot, online=False))


def of(effects: list[Effect], kind: type) -> list:
    return [e for e in effects if isinstance(e, kind)]
