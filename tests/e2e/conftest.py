"""The end-to-end rig: Mosquitto, the `andon gateway` process and virtual boards running the
real firmware, all on free loopback ports under the test's tmp dir, all stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from andon.firmware_build import SOURCES
from andon.sim.rig import Rig

PLANT = Path(__file__).with_name("plant.toml")
SCENARIOS = SOURCES / "scenarios"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Rig(PLANT, tmp_path / "rig") as r:
        r.wait_line_up()
        yield r
