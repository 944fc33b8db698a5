"""What a command costs to run: CPU seconds (user + sys) of a whole `andon` process.

`andon status` (and `--json`) on the example plant (examples/plant.toml) with a store its
gateway could have written: `--events` events (3,000 by default) from its 12 boards (cycles,
call buttons, acknowledgements, cord pulls and resets, kanban cards posted and received; a cord
left pulled at the end), logged and applied by the gateway's own code. Two stores:

- running: no projection after the events, as while the gateway runs and has not taken one
  yet (it takes one every `SNAPSHOT_EVERY` entries): `status` replays them all;
- stopped: a projection after them, as a gateway leaves at its stop (the demo's database):
  `status` replays nothing.

The baseline is `andon --version` in the same run: a process that only starts the CLI. Each
figure is the median of `--runs` runs (7 by default), with its range. CPU time, not wall: on a
shared machine it is what an idle machine's wall time would be. The bytecode caches are
written and used, as in any install (a PYTHONDONTWRITEBYTECODE in the environment is dropped
for the measured processes). The goal: `status` in at most 0.3 s of CPU.

    .venv/bin/python -m bench.cli [--runs 7] [--events 3000]

Prints its figures and ends with one JSON line. Not run by `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.gateway import fill

from andon import contract
from andon.config import PlantConfig, load_plant
from andon.core import Plant
from andon.runtime.store import SqliteStore
from andon.sim.rig import andon_command

EXAMPLE = Path(__file__).parents[1] / "examples" / "plant.toml"
GOAL_STATUS_CPU_S = 0.3
CARD = {"uid": "04A1B2C3D4E580"}  # P-1001's first card: posted at L1/S03, received at L2/S04


# A station's events in one round: three cycles, a maintenance call acknowledged and
# resolved, a cord pulled, acknowledged and reset.
ROUND = [
    *[{"kind": "cycle", "input": "cycle"}] * 3,
    {"kind": "call", "input": "call_maintenance", "reason": "maintenance"},
    *[{"kind": "ack", "input": "ack"}] * 2,
    {"kind": "cord_pulled", "input": "cord"},
    {"kind": "ack", "input": "ack"},
    {"kind": "cord_reset", "input": "cord"},
]


def plant_events(config: PlantConfig, rounds: int, ts: int) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) for `rounds` rounds of every station, a kanban card posted and its bin
    received after each round, and at the end a cord pulled at L1/S03 (an open call)."""
    seqs = {station.board: 0 for _, station in config.stations()}

    def message(line: str, station: str, event: dict) -> tuple[str, bytes]:
        board = config.station(line, station).board
        seqs[board] += 1
        header = {"board": board, "boot": 1, "seq": seqs[board], "base": 1, "ts": ts, "age": None}
        topic = contract.Station(config.site, line, station).topic("evt")
        return topic, json.dumps(header | event).encode()

    for _ in range(rounds):
        for line, station in config.stations():
            for event in ROUND:
                yield message(line.id, station.id, event)
        for line, station, role in (("L1", "S03", "post"), ("L2", "S04", "receive")):
            yield message(line, station, {"kind": "scan", "reader": role, "role": role} | CARD)
    yield message("L1", "S03", {"kind": "cord_pulled", "input": "cord"})


def example_store(workdir: Path, events: int, stopped: bool) -> str:
    """The example plant's file in `workdir`, its database holding about `events` events,
    with a projection after them when `stopped`."""
    workdir.mkdir()
    plant_file = workdir / "plant.toml"
    plant_file.write_text(EXAMPLE.read_text())
    config = load_plant(plant_file)
    per_round = len(list(config.stations())) * len(ROUND) + 2
    start = time.time_ns() // 1_000_000 - 600_000  # ten minutes ago
    store = SqliteStore(config.gateway.database)
    try:
        batch = plant_events(config, max(1, events // per_round), start)
        fill(store, Plant(config), config, batch, start, project=stopped)
    finally:
        store.close()
    return str(plant_file)


def cpu_seconds(args: list[str]) -> float:
    """User + sys CPU seconds of one `andon` process run to its end (it must succeed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(andon_command(*args), check=True, capture_output=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Each command's CPU seconds in `runs` rounds, the commands taking turns (a load that
    comes and goes on a shared machine falls on all of them alike)."""
    for args in commands.values():
        cpu_seconds(args)  # a first run writes the bytecode caches and warms the page cache
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, args in commands.items():
            times[name].append(cpu_seconds(args))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--events", type=int, default=3000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        running = example_store(Path(tmp, "running"), options.events, stopped=False)
        stopped = example_store(Path(tmp, "stopped"), options.events, stopped=True)
        times = measure(
            {
                "version": ["--version"],
                "status": ["status", "--config", running],
                "status_json": ["status", "--config", running, "--json"],
                "status_stopped": ["status", "--config", stopped],
            },
            options.runs,
        )
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:15} CPU {median[name]:.3f} s, median of {len(t)} ({min(t):.3f}-{max(t):.3f})")
    print(f"goal: status in at most {GOAL_STATUS_CPU_S} s of CPU")
    summary = {
        "events": options.events,
        "runs": options.runs,
        **{f"{name}_cpu_s": round(m, 3) for name, m in median.items()},
        "status_cpu_range_s": [round(min(times["status"]), 3), round(max(times["status"]), 3)],
        "status_to_version": round(median["status"] / median["version"], 2),
        "status_stopped_to_version": round(median["status_stopped"] / median["version"], 2),
        "goal_met": median["status"] <= GOAL_STATUS_CPU_S,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
