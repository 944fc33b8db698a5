"""Scenario files (TOML): at time t do X at a station; expect Y within Z ms.

```toml
name = "cord pull"
[[steps]]
at_ms = 0
do = "pull"                 # pull reset press wire scan power-cut restart wifi-down wifi-up
station = "L1/S03"
[[steps]]
at_ms = 0
expect = "lamps"            # this station's tower; "line_lamps": every board of `line`
station = "L1/S03"
lamps = { amber = "on" }    # on off slow fast, or lit (any of on slow fast)
within_ms = 500
```

Expectations: `lamps`, `line_lamps` (line), `station_state` / `line_state` (`state`, from the
gateway's retained topics), `replenish` (`part`, exactly `count` triggers on its topic since the
run began), `order` (`part`, the latest order's `received`), `call` (station, the latest call's
`acknowledged` / `stopped` / `resolved`, of the call of `cause` if given), `alert` (`kind`, at
`station` if given).

Steps run in order, each not before its `at_ms` after the start (nor before `after_ms` after
the previous step); an expectation is polled until
it holds or `within_ms` has passed (then the run fails), so later steps may run late, never
early. With `during_ms` instead, the expectation must hold the whole time (nothing happens too
soon). One runner serves the end-to-end tests, the demo and `andon sim run`.
"""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from andon import contract
from andon.contract import Name, Uid
from andon.runtime.store import plant_records
from andon.sim.line import BUTTONS, LIT, VERBS, WIRE_FAULTS, VirtualLine
from andon.sim.observe import Observer

Segment = Literal["red", "amber", "green", "blue", "white", "buzzer"]
LampWant = Literal["on", "off", "slow", "fast", "lit"]
ExpectKind = Literal[
    "lamps", "line_lamps", "station_state", "line_state", "replenish", "order", "call", "alert"
]
NEEDS = {  # what each step needs besides its kind
    "lamps": ("station", "lamps"),
    "line_lamps": ("line", "lamps"),
    "station_state": ("station", "state"),
    "line_state": ("line", "state"),
    "replenish": ("part",),
    "order": ("part", "received"),
    "call": ("station",),
    "alert": ("kind",),
    "pull": ("station",),
    "reset": ("station",),
    "press": ("station", "button"),
    "wire": ("station", "fault"),
    "scan": ("station", "uid"),
}
POLL_S = 0.02


class ScenarioError(ValueError):
    """A scenario file that cannot be read or run; the message names the file and the step."""


class ScenarioFailed(AssertionError):
    """An expectation that did not hold in time."""


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at_ms: Annotated[int, Field(ge=0)] = 0
    after_ms: Annotated[int, Field(ge=0)] = 0  # and this long after the previous step ended
    do: Literal[VERBS] | None = None  # type: ignore[valid-type]
    expect: ExpectKind | None = None
    station: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}/[A-Za-z0-9_-]{1,32}$")] | None = (
        None
    )
    line: Name | None = None
    note: str = ""
    # what to do
    button: Literal[tuple(BUTTONS)] | None = None  # type: ignore[valid-type]
    fault: Literal[WIRE_FAULTS] | None = None  # type: ignore[valid-type]
    uid: Uid | None = None
    reader: Name | None = None
    # what to expect
    lamps: dict[Segment, LampWant] | None = None
    state: str | None = None
    part: Name | None = None
    count: Annotated[int, Field(ge=0)] = 1
    received: bool | None = None
    kind: str | None = None
    cause: Name | None = None
    acknowledged: bool | None = None
    stopped: bool | None = None
    resolved: bool | None = None
    within_ms: Annotated[int, Field(ge=0)] = 5000
    during_ms: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Step:
        if (self.do is None) == (self.expect is None):
            raise ValueError("a step has either `do` or `expect`")
        what = self.do or self.expect
        missing = [name for name in NEEDS.get(what, ("station",)) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{what} needs {', '.join(missing)}")
        return self

    @property
    def where(self) -> tuple[str, str]:
        line, _, station = (self.station or "/").partition("/")
        return line, station

    def describe(self) -> str:
        what = self.do or f"expect {self.expect}"
        args = [
            self.station or self.line,
            self.button,
            self.fault,
            self.uid,
            self.part,
            self.state,
            self.kind,
        ]
        text = " ".join([what, *(str(a) for a in args if a)])
        if self.lamps:
            text += " " + ",".join(f"{seg}={mode}" for seg, mode in self.lamps.items())
        return text


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    steps: Annotated[list[Step], Field(min_length=1)]


def load_scenario(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Scenario.model_validate(data)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = (
            f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ScenarioError("\n".join(problems)) from None


@dataclass(frozen=True)
class Outcome:
    index: int
    step: Step
    started_ms: int  # after the run's start
    took_ms: int
    detail: str  # what was seen when it held (or, failing, last)


def lamps_match(want: dict[str, str], shown: dict[str, str] | None) -> bool:
    if shown is None:
        return False
    return all(
        shown.get(seg) in LIT if mode == "lit" else shown.get(seg) == mode
        for seg, mode in want.items()
    )


class Runner:
    """Runs scenarios against a virtual line, watching the broker and the plant's store (its
    SQLite file or its PostgreSQL)."""

    def __init__(
        self,
        line: VirtualLine,
        observer: Observer,
        report: Callable[[str], None] = lambda _text: None,
        stop: threading.Event | None = None,
    ) -> None:
        self.line = line
        self.observer = observer
        self.site = line.plant.site
        self.report = report
        self.stop = stop or threading.Event()

    def run(self, scenario: Scenario) -> list[Outcome]:
        """Every step in order (until `stop` is set); ScenarioFailed at the first expectation
        that does not hold."""
        self.start = time.monotonic()
        outcomes = []
        for index, step in enumerate(scenario.steps):
            due = max(self.start + step.at_ms / 1000, time.monotonic() + step.after_ms / 1000)
            if self.stop.wait(max(0.0, due - time.monotonic())):
                break
            outcome = self._step(index, step)
            if outcome is None:
                break  # told to stop mid-step
            outcomes.append(outcome)
            note = f"  ({step.note})" if step.note else ""
            done_s = (outcome.started_ms + outcome.took_ms) / 1000
            self.report(f"[{done_s:6.1f}s] {step.describe()}: ok{note}")
        return outcomes

    def _ms(self, since: float) -> int:
        return round((time.monotonic() - since) * 1000)

    def _step(self, index: int, step: Step) -> Outcome | None:
        began = time.monotonic()
        started_ms = self._ms(self.start)
        if step.do is not None:
            reply = self.line.do(step.do, *step.where, **self._action_args(step))
            return Outcome(index, step, started_ms, self._ms(began), str(reply))
        check = getattr(self, "_expect_" + step.expect)
        if step.during_ms is not None:
            return self._hold(index, step, check, began, started_ms)
        deadline = began + step.within_ms / 1000
        while True:
            ok, detail = check(step)
            if ok:
                return Outcome(index, step, started_ms, self._ms(began), detail)
            if self.stop.is_set():
                return None
            if time.monotonic() > deadline:
                raise ScenarioFailed(
                    f"step {index + 1} ({step.describe()}) not within {step.within_ms} ms: {detail}"
                )
            time.sleep(POLL_S)

    def _hold(self, index: int, step: Step, check: Callable, began: float, started: int) -> Outcome:
        end = began + step.during_ms / 1000
        while time.monotonic() < end and not self.stop.is_set():
            ok, detail = check(step)
            if not ok:
                raise ScenarioFailed(
                    f"step {index + 1} ({step.describe()}) broke after {self._ms(began)} ms"
                    f" of {step.during_ms}: {detail}"
                )
            time.sleep(POLL_S)
        return Outcome(index, step, started, self._ms(began), "held")

    @staticmethod
    def _action_args(step: Step) -> dict[str, Any]:
        names = {"press": ("button",), "wire": ("fault",), "scan": ("uid", "reader")}
        names = names.get(step.do, ())
        return {name: getattr(step, name) for name in names if getattr(step, name) is not None}

    # --- expectations: (holds, what was seen) ------------------------------------------------

    def _expect_lamps(self, step: Step) -> tuple[bool, str]:
        shown = self.line.lamps(*step.where)
        return lamps_match(step.lamps, shown), f"{step.station} shows {shown}"

    def _expect_line_lamps(self, step: Step) -> tuple[bool, str]:
        shown = self.line.line_lamps(step.line)
        off = {s: lamps for s, lamps in shown.items() if not lamps_match(step.lamps, lamps)}
        return not off, f"not yet at {off}"

    def _expect_station_state(self, step: Step) -> tuple[bool, str]:
        topic = contract.Station(self.site, *step.where).topic("state")
        state = self.observer.latest(topic)
        return state is not None and state.get("state") == step.state, f"state {state}"

    def _expect_line_state(self, step: Step) -> tuple[bool, str]:
        state = self.observer.latest(contract.line_state_topic(self.site, step.line))
        return state is not None and state.get("state") == step.state, f"line state {state}"

    def _expect_replenish(self, step: Step) -> tuple[bool, str]:
        topic = contract.replenish_topic(self.site, step.part)
        got = [s.body for s in self.observer.seen(topic, since=self.start)]
        return len(got) == step.count, f"{len(got)} triggers: {got}"

    def _expect_order(self, step: Step) -> tuple[bool, str]:
        orders = [o for o in plant_records(self.line.plant, "order") if o["part"] == step.part]
        last = orders[-1] if orders else None
        ok = last is not None and (last["received"] is not None) == step.received
        return ok, f"latest order {last}"

    def _expect_call(self, step: Step) -> tuple[bool, str]:
        at = step.where
        calls = [
            c
            for c in plant_records(self.line.plant, "call")
            if (c["line"], c["station"]) == at and step.cause in (None, c["cause"])
        ]
        last = calls[-1] if calls else None
        wanted = {"acknowledged": step.acknowledged, "stopped": step.stopped}
        wanted["resolved"] = step.resolved
        ok = last is not None and all(
            want is None or (last[key] is not None) == want for key, want in wanted.items()
        )
        return ok, f"latest call {last}"

    def _expect_alert(self, step: Step) -> tuple[bool, str]:
        alerts = [s.body for s in self.observer.seen(contract.alert_topic(self.site), self.start)]
        line, station = step.where
        hits = [
            a
            for a in alerts
            if a
            and a.get("kind") == step.kind
            and (step.station is None or (a.get("line"), a.get("station")) == (line, station))
        ]
        return bool(hits), f"alerts {[a.get('kind') for a in alerts if a]}"
