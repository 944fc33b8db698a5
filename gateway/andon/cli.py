"""The `andon` command: the gateway, the virtual line, provisioning and flashing."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help=__doc__)


@app.command()
def demo() -> None:
    """Run a whole virtual line against a local broker and the gateway (coming: issue #5)."""
    typer.echo(
        "The demo will start Mosquitto on a free local port, the gateway with the example\n"
        "plant (examples/plant.toml), a virtual line of 8+ stations running the real firmware\n"
        "in the MicroPython VM, and a scenario: cord pull, acknowledgement, fixed-position line\n"
        "stop, resolution, kanban post and receipt, shown on a live terminal andon board.\n"
        "It is not built yet; `make test` is."
    )


@app.command()
def version() -> None:
    """Print the gateway's version."""
    from andon import __version__

    typer.echo(__version__)
