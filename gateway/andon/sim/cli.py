"""`andon sim`: run a virtual line of the plant, and act on it from another terminal."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from andon.clitools import andon_to_type, plant_or_exit

sim_app = typer.Typer(help=__doc__, no_args_is_help=False)

StateOption = Annotated[
    Path, typer.Option("--state", help="The running line's state dir (`andon sim --state`).")
]
DEFAULT_STATE = Path("var/sim")


def _fail(text: str) -> typer.Exit:
    typer.echo(f"andon sim: {text}", err=True)
    return typer.Exit(2)


def _broker_override(plant, broker: str | None):
    if broker is None:
        return plant
    host, sep, port = broker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise _fail(f"--broker {broker!r}: expected HOST:PORT")
    moved = plant.broker.model_copy(update={"host": host, "port": int(port)})
    return plant.model_copy(update={"broker": moved})


@sim_app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="The plant configuration (TOML).")
    ] = None,
    broker: Annotated[
        str | None, typer.Option("--broker", help="HOST:PORT instead of the plant's broker.")
    ] = None,
    provisioned: Annotated[
        Path | None,
        typer.Option(
            "--provisioned",
            help="What `andon provision --out` wrote: each board logs in with its own account.",
        ),
    ] = None,
    state: StateOption = DEFAULT_STATE,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="Run this scenario once the line is up.")
    ] = None,
) -> None:
    """Start one virtual board per station (real firmware in the VM) until Ctrl-C or SIGTERM."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise _fail("give the plant with --config (or a command: andon sim --help)")
    from andon.sim.control import ControlServer
    from andon.sim.line import SimError, VirtualLine

    if provisioned is not None and broker is not None:
        raise _fail("--broker with --provisioned: the boards' broker is in their configs")
    plant = _broker_override(plant_or_exit(config), broker)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        line = VirtualLine(plant, state, provisioned=provisioned)
    except SimError as exc:
        raise _fail(str(exc)) from None
    with line, ControlServer(line, state):
        typer.echo(
            f"{len(line.boards)} virtual boards on {plant.broker.host}:{plant.broker.port}; "
            f"flash dirs under {state}/. From another terminal:\n"
            f"  {andon_to_type()} sim pull L1 S03 --state {state}"
            "     (reset, press ... ack, scan, lights)\n"
            "Ctrl-C stops every board."
        )
        if scenario is not None:
            _run_scenario(line, plant, scenario, stop)
        stop.wait()
    typer.echo("andon sim: every board stopped")


def _run_scenario(line, plant, path: Path, stop: threading.Event) -> None:
    from andon.sim.observe import Observer
    from andon.sim.scenario import Runner, ScenarioError, ScenarioFailed, load_scenario

    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        raise _fail(str(exc)) from None
    broker = plant.broker  # on a secured broker, it reads with the gateway's account
    observer = Observer(
        broker.host, broker.port, username=broker.username, password=broker.password
    )
    try:
        Runner(line, observer, report=typer.echo, stop=stop).run(scenario)
        typer.echo(f"scenario {scenario.name!r}: every step held")
    except ScenarioFailed as exc:
        typer.echo(f"scenario {scenario.name!r} FAILED: {exc}", err=True)
    finally:
        observer.close()


def _act(state: Path, verb: str, line: str, station: str, **args: str | None) -> dict:
    from andon.sim.control import ControlError, request

    message = {"verb": verb, "line": line, "station": station}
    message["args"] = {k: v for k, v in args.items() if v is not None}
    try:
        return request(state, message)
    except ControlError as exc:
        raise _fail(str(exc)) from None


@sim_app.command()
def pull(line: str, station: str, state: StateOption = DEFAULT_STATE) -> None:
    """Pull the station's stop cord (it stays pulled until `reset`)."""
    _act(state, "pull", line, station)
    typer.echo(f"{line}/{station}: cord pulled")


@sim_app.command()
def reset(line: str, station: str, state: StateOption = DEFAULT_STATE) -> None:
    """Reset the station's stop cord."""
    _act(state, "reset", line, station)
    typer.echo(f"{line}/{station}: cord reset")


@sim_app.command()
def press(
    line: str,
    station: str,
    button: Annotated[str, typer.Argument(help="maint, qual, mat, ack or cycle")],
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Press and release a call or acknowledge button."""
    _act(state, "press", line, station, button=button)
    typer.echo(f"{line}/{station}: {button} pressed")


@sim_app.command()
def scan(
    line: str,
    station: str,
    uid: Annotated[str, typer.Argument(help="The tag's UID in hex (8, 14 or 20 digits).")],
    reader: Annotated[
        str | None, typer.Option("--reader", help="post, receive or badge (if several).")
    ] = None,
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Place a tag on a reader for a moment (a kanban card posted or received, a badge tap)."""
    _act(state, "scan", line, station, uid=uid, reader=reader)
    typer.echo(f"{line}/{station}: {uid} scanned")


@sim_app.command()
def wire(
    line: str,
    station: str,
    fault: Annotated[str, typer.Argument(help="cut, short or mend")],
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Cut or short the cable of the station's supervised cord, or mend it."""
    _act(state, "wire", line, station, fault=fault)
    typer.echo(f"{line}/{station}: supervised cord wire {fault}")


@sim_app.command("power-cut")
def power_cut(line: str, station: str, state: StateOption = DEFAULT_STATE) -> None:
    """Cut the board's power (kill -9); what is on its flash stays."""
    _act(state, "power-cut", line, station)
    typer.echo(f"{line}/{station}: power cut")


@sim_app.command()
def restart(line: str, station: str, state: StateOption = DEFAULT_STATE) -> None:
    """Power the board up again (it boots from its flash)."""
    _act(state, "restart", line, station)
    typer.echo(f"{line}/{station}: restarted")


@sim_app.command()
def wifi(
    line: str,
    station: str,
    up: Annotated[str, typer.Argument(help="up or down")],
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Take the board's Wi-Fi down or bring it back."""
    if up not in ("up", "down"):
        raise _fail("wifi: say up or down")
    _act(state, f"wifi-{up}", line, station)
    typer.echo(f"{line}/{station}: wifi {up}")


@sim_app.command()
def lights(line: str, state: StateOption = DEFAULT_STATE) -> None:
    """Every station's tower on the line, as it shows now."""
    from rich.console import Console

    from andon.sim.control import ControlError, request
    from andon.sim.show import lights_table

    try:
        reply = request(state, {"verb": "lights", "line": line})
    except ControlError as exc:
        raise _fail(str(exc)) from None
    Console().print(lights_table(line, reply["lights"]))
