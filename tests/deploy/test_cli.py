"""The `andon` command as scripts and people meet it (issue #14, findings 3, 4 and 5): a
version, JSON, one-line errors that name what is valid, `status` that refuses a missing
database and shows the plant in its own timezone within 80 columns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from andon.config import load_plant
from andon.core import Plant
from andon.sim.line import SimBoard, SimError
from andon.sim.rig import andon_command
from andon.status import status_tables, when

E2E_PLANT = Path(__file__).parents[1] / "e2e" / "plant.toml"
EXAMPLE = Path(__file__).parents[2] / "examples" / "plant.toml"


def andon(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(andon_command(*args), capture_output=True, text=True, cwd=cwd)


def test_version_is_a_top_level_option():
    from andon import __version__

    run = andon("--version")
    assert (run.returncode, run.stdout.strip()) == (0, f"andon {__version__}")


def test_status_without_a_database_is_refused_and_creates_none(tmp_path):
    plant = tmp_path / "plant.toml"
    plant.write_text(E2E_PLANT.read_text())
    run = andon("status", "--config", str(plant))
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1  # one line
    assert f"no database at {tmp_path / 'andon.db'}" in run.stderr
    assert not (tmp_path / "andon.db").exists()


@pytest.mark.parametrize("command", ["status", "events"])
def test_a_reader_on_a_postgresql_no_gateway_ran_with_is_refused_and_creates_nothing(
    tmp_path, postgres, command
):
    plant = tmp_path / "plant.toml"
    plant.write_text(f'{E2E_PLANT.read_text()}\n[store]\nurl = "{postgres}"\n')
    run = andon(command, "--config", str(plant))
    assert (run.returncode, run.stderr.count("\n")) == (2, 1)
    assert "no andon tables in the PostgreSQL of [store] url" in run.stderr
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)


@pytest.mark.parametrize(
    "args, says",
    [
        (["bogus"], "one of: demo, provision"),
        (["sim", "bogus"], "one of: pull, reset, press"),
        (["gateway", "--config", "x.toml", "--log-format", "xml"], "'text', 'json'"),
        (["status"], "Missing option '--config'"),
    ],
)
def test_a_usage_error_is_one_line_naming_what_is_valid(args, says):
    run = andon(*args)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert says in run.stderr and "Traceback" not in run.stderr


def test_provision_into_a_file_or_an_unrelated_directory_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    a_file = home / "notes.txt"
    a_file.write_text("mine")
    into_file = andon("provision", "--config", str(EXAMPLE), "--out", str(a_file))
    assert into_file.returncode == 2 and into_file.stderr.count("\n") == 1
    assert "a file, not a directory" in into_file.stderr

    unrelated = andon("provision", "--config", str(EXAMPLE), "--out", str(home))
    assert unrelated.returncode == 2 and unrelated.stderr.count("\n") == 1
    assert "holds other files (notes.txt)" in unrelated.stderr and "--force" in unrelated.stderr
    assert home.stat().st_mode & 0o777 == 0o755  # left as it was
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]

    out = tmp_path / "provisioned"
    assert andon("provision", "--config", str(EXAMPLE), "--out", str(out)).returncode == 0
    again = andon("provision", "--config", str(EXAMPLE), "--out", str(out))
    assert again.returncode == 0, again.stderr  # a provision dir is provisioned again
    forced = andon("provision", "--config", str(EXAMPLE), "--out", str(home), "--force")
    assert forced.returncode == 0, forced.stderr


def _sim_board(readers: list[str]) -> SimBoard:
    config = {"rfid": {"readers": [{"name": r} for r in readers]}} if readers else {}
    return SimBoard(line="L1", station="S03", board=None, config=config)


def test_scan_names_the_readers_a_station_has():
    with pytest.raises(SimError, match=r"L1/S03 has no 'post' reader; its readers: badge"):
        _sim_board(["badge"]).reader_named("post")
    with pytest.raises(SimError, match=r"L1/S03 has no RFID reader"):
        _sim_board([]).reader_named(None)
    with pytest.raises(SimError, match=r"say which with --reader, one of: post, badge"):
        _sim_board(["post", "badge"]).reader_named(None)
    assert _sim_board(["badge"]).reader_named(None) == "badge"


def _example_view() -> tuple[dict, object]:
    """The example plant a minute after a cord pull at L1/S03, with an open alert."""
    config = load_plant(EXAMPLE)
    view = Plant(config).view()
    now = 1_764_500_000_000  # 2025-11-30 10:53:20 UTC = 11:53:20 in Berlin
    view["now"] = now
    station = view["lines"][0]["stations"][2]
    station.update(state="called", call="cord", since=now - 60_000)
    view["lines"][0]["state"], view["lines"][0]["since"] = "called", now - 60_000
    view["calls"] = [
        {
            "id": "C-000001",
            "line": "L1",
            "station": "S03",
            "cause": "cord",
            "opened": now - 60_000,
            "acknowledged": now - 30_000,
            "acknowledged_by": "Maria Keller (team leader)",
            "stopped": None,
            "stop_at": now + 45_000,
        }
    ]
    view["alerts"] = [
        {
            "id": 7,
            "kind": "station_offline",
            "text": "L2/S04 (board 3C71BF0A1155) has been offline since 11:50: check its power",
            "ts": now - 200_000,
            "line": "L2",
            "station": "S04",
        }
    ]
    return view, config


def test_status_fits_80_columns_in_the_plants_timezone_with_calls_and_alerts():
    from rich.console import Console

    view, config = _example_view()
    assert config.timezone == "Europe/Berlin"
    console = Console(width=80, record=True, color_system=None)
    for table in status_tables(view, config.zone):
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "..." not in text  # nothing cut
    assert "open calls: 1" in text and "C-000001" in text and "in 45 s" in text
    assert "open alerts: 1" in text and "station_offline" in text and "power" in text
    assert "11:52:20" in text  # the call opened at 10:52:20 UTC: Berlin time
    assert when(view["now"], config.zone, view["now"]) == "11:53:20"


def test_status_and_events_as_json(tmp_path):
    """A plant whose gateway ran (its database exists): both commands give JSON."""
    from andon.runtime.store import SqliteStore

    plant = tmp_path / "plant.toml"
    plant.write_text(E2E_PLANT.read_text())
    SqliteStore(tmp_path / "andon.db").close()  # what a gateway leaves before any event
    status = andon("status", "--config", str(plant), "--json")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert [s["id"] for s in view["lines"][0]["stations"]] == ["S01", "S02", "S03", "S04"]
    events = andon("events", "--config", str(plant), "--json", "--since", "1d")
    assert events.returncode == 0, events.stderr
    assert json.loads(events.stdout) == []


def test_status_prints_names_as_written_never_as_markup(tmp_path):
    """A plant's names are free text: `[spare]` or `:x:` is printed, not taken for rich markup
    or an emoji code, and a `[/]` does not stop the command."""
    from andon.runtime.store import SqliteStore

    name = "Press [spare] :x: [/]"
    plant = tmp_path / "plant.toml"
    plant.write_text(E2E_PLANT.read_text().replace('name = "Assembly"', f'name = "{name}"'))
    SqliteStore(tmp_path / "andon.db").close()
    status = andon("status", "--config", str(plant))
    assert status.returncode == 0, status.stderr
    assert name in status.stdout


def test_the_gateway_names_the_broker_it_cannot_reach(tmp_path, caplog):
    from andon.runtime.service import Gateway
    from andon.sim.mosquitto import free_port
    from andon.sim.observe import wait_for
    from tests.gateway.test_service import plant_config

    class Nowhere:
        host, port = "127.0.0.1", free_port()

    gateway = Gateway(plant_config(tmp_path, Nowhere))
    try:
        gateway.start()
        wait_for(
            "the gateway's warning",
            lambda: any("cannot reach the broker" in r.getMessage() for r in caplog.records),
        )
    finally:
        gateway.stop(timeout=1)
    warning = next(r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage())
    assert f"at 127.0.0.1:{Nowhere.port}:" in warning
