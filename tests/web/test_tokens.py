"""`andon token new` and `andon token hash` print plant-file entries that the plant accepts and
that let exactly that token in, with its role; the plain token is never stored."""

from __future__ import annotations

import re
import tomllib

from typer.testing import CliRunner

from andon.cli import app
from andon.config import PlantConfig

STATION = {"id": "S1", "name": "S1", "board": "B1", "profile": "esp32-devkitc"}


def plant_with(entry: str) -> PlantConfig:
    tokens = tomllib.loads(entry)["api_tokens"]
    lines = [{"id": "L1", "name": "L1", "stations": [STATION]}]
    return PlantConfig.model_validate({"site": "P1", "lines": lines, "api_tokens": tokens})


def test_a_new_token_is_shown_once_and_stored_as_its_hash():
    run = CliRunner().invoke(app, ["token", "new", "tv-hall-2", "--role", "supervisor"])
    assert run.exit_code == 0, run.output
    token = re.search(r"shown only now: (\S+)", run.output)[1]
    entry = run.output.split("\n", 1)[1]
    assert token not in entry
    plant = plant_with(entry)
    found = plant.api_token(token)
    assert (found.name, found.role) == ("tv-hall-2", "supervisor")
    assert plant.api_token(token + "x") is None


def test_hash_takes_the_token_from_stdin_and_refuses_a_short_one():
    token = "an-existing-token-0123"
    run = CliRunner().invoke(app, ["token", "hash", "mes"], input=token + "\n")
    assert run.exit_code == 0, run.output
    assert plant_with(run.output).api_token(token).role == "viewer"
    short = CliRunner().invoke(app, ["token", "hash", "mes"], input="short\n")
    assert short.exit_code != 0 and "at least 16 characters" in short.output
    unknown = CliRunner().invoke(app, ["token", "new", "x", "--role", "root"])
    assert unknown.exit_code != 0 and "viewer, supervisor, admin" in unknown.output
