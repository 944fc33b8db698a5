"""The browser tests: Playwright (PyPI) driving Debian's chromium, which `make test` installs
(Playwright's own browser download cannot be reached from a plant or CI). Every browser is
closed by the test that opened it, even when the test fails."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from andon.sim.observe import wait_for
from andon.sim.rig import Rig

E2E_PLANT = Path(__file__).parents[1] / "e2e" / "plant.toml"
VIEWER = "e2e-dashboard-0123456789"  # their hashes are in tests/e2e/plant.toml
SUPERVISOR = "e2e-supervisor-0123456789"


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests may run as root (CI), where chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def line_rig(tmp_path: Path) -> Iterator[Rig]:
    """The e2e plant's line with boards at S02 (badge reader) and S03, the gateway serving
    the board."""
    with Rig(E2E_PLANT, tmp_path / "rig", stations=["L1/S02", "L1/S03"]) as rig:
        rig.wait_line_up()
        yield rig


def site_url(rig: Rig, path: str, token: str = VIEWER) -> str:
    """A page of the rig's gateway, its token in the URL as a kiosk has it."""
    base = rig.api_url.removesuffix("/api/v1")
    return f"{base}{path}?token={token}"


def wait_served(rig: Rig) -> None:
    """Until the gateway's HTTP server answers (it starts listening after its MQTT birth)."""

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{rig.api_url}/health", timeout=2):
                return True
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for("the gateway's HTTP server", answers)
