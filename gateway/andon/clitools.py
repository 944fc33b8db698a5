"""What the `andon` command and its `sim` subcommands share: loading the plant for a command."""

from __future__ import annotations

from pathlib import Path

import typer

from andon.config import PlantConfig


def plant_or_exit(config: Path) -> PlantConfig:
    """The plant configuration, or exit 2 with the error's one-line message."""
    from andon.config import ConfigError, load_plant

    try:
        return load_plant(config)
    except ConfigError as exc:
        typer.echo(f"andon: {exc}", err=True)
        raise typer.Exit(2) from None
