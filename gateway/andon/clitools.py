"""What the `andon` command and its `sim` subcommands share: loading the plant and opening its
database for a command, and `--json` output. Imports stay lazy: a command starts fast."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from andon.config import PlantConfig
    from andon.runtime.store import Store

JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document on stdout, for scripts.")
]


def fail(command: str, text: str, code: int = 2) -> typer.Exit:
    """Print `andon COMMAND: text` as one line on stderr; raise what this returns."""
    typer.echo(f"andon {command}: {text}", err=True)
    return typer.Exit(code)


def plant_or_exit(config: Path) -> PlantConfig:
    """The plant configuration, or exit 2 with the error's one-line message."""
    from andon.config import ConfigError, load_plant

    try:
        return load_plant(config)
    except ConfigError as exc:
        typer.echo(f"andon: {exc}", err=True)
        raise typer.Exit(2) from None


def store_or_exit(plant: PlantConfig, config: Path) -> None:
    """The plant's store must hold the gateway's tables: a reader never creates empty ones (they
    would show a healthy plant that never ran)."""
    from andon.runtime.store import read_plant

    if read_plant(plant, lambda db: True, False):
        return
    where = (
        "no andon tables in the PostgreSQL of [store] url"
        if plant.store.url
        else f"no database at {plant.gateway.database}"
    )
    typer.echo(
        f"andon: {where}: the gateway has not run with this plant yet"
        f" (andon gateway --config {config}), or the plant file points elsewhere",
        err=True,
    )
    raise typer.Exit(2)


def open_store(plant: PlantConfig, config: Path) -> Store:
    """The plant's store, which must exist: its PostgreSQL (`[store] url`), else its SQLite
    database."""
    store_or_exit(plant, config)
    from andon.runtime.store import open_store as open_plant_store

    return open_plant_store(plant)


def emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    """`data` as JSON for a script, else what `human` prints."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        human()


def andon_to_type() -> str:
    """How to run this `andon` from another terminal: `andon` when it is the one on PATH, else
    its path (`.venv/bin/andon` in a checkout)."""
    beside = Path(sys.executable).with_name("andon")
    on_path = shutil.which("andon")
    if on_path and Path(on_path).resolve() == beside.resolve():
        return "andon"
    return str(beside.relative_to(Path.cwd()) if beside.is_relative_to(Path.cwd()) else beside)


_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_since(text: str, now: int | None = None) -> int:
    """`10m`, `2h`, `1d` ago, or an ISO time (UTC unless it says otherwise), as epoch ms."""
    if m := _AGO.match(text):
        return (now or time.time_ns() // 1_000_000) - int(m[1]) * _UNIT_MS[m[2]]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected 90s, 10m, 2h, 1d or an ISO time") from None
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)
