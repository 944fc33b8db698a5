"""`andon demo --duration` runs without a terminal, exits 0 and leaves its database."""

from __future__ import annotations

import json
import re
import subprocess

from andon.runtime.store import SqliteStore
from andon.sim.rig import andon_command


def test_a_short_demo_run_exits_0_and_leaves_the_database(tmp_path):
    run = subprocess.run(
        andon_command("demo", "--duration", "8"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "andon sim pull L1 S03 --state var/demo/sim" in run.stdout
    board = re.search(r"board: +(http://127\.0\.0\.1:\d+/board/L1\?token=\S+)", run.stdout)
    assert board, run.stdout  # the demo prints the live board's URL, its token also the curl's
    token = board[1].partition("token=")[2]
    assert f"curl -H 'Authorization: Bearer {token}' http://127.0.0.1:" in run.stdout
    assert "pull L1/S03: ok" in run.stdout  # the scenario started: a cord was pulled
    assert "L1 called:" in run.stdout  # and the plain board showed it
    database = tmp_path / "var" / "demo" / "andon.db"
    assert f"The database is {database.relative_to(tmp_path)}" in run.stdout
    store = SqliteStore(database)
    try:
        kinds = [json.loads(entry.message).get("kind") for entry in store.log()]
    finally:
        store.close()
    assert "cord_pulled" in kinds
    assert not (tmp_path / "var" / "demo" / "sim" / "sim.json").exists()  # the line is down
