"""The live board and the console in Chromium, on the e2e rig: virtual boards running the
firmware, Mosquitto and the `andon gateway` process serving the pages."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from playwright.sync_api import Page

from andon import contract
from andon.sim.observe import wait_for
from andon.sim.rig import Rig
from tests.web.conftest import E2E_PLANT, SUPERVISOR, site_url, wait_served

TILE = '[data-line="L1"] .tile[data-station="{}"]'
BANNER = '[data-line="L1"] .banner'
WAIT_MS = 20_000

# Every state the tile of S03 has shown, in order: a push that came and went between two looks
# is still seen.
RECORD_STATES = """
() => {
  window.shown = [];
  const watch = () => {
    const tile = document.querySelector('[data-line="L1"] .tile[data-station="S03"]');
    if (!tile) return setTimeout(watch, 50);
    window.shown.push(tile.dataset.state);
    new MutationObserver(() => window.shown.push(tile.dataset.state))
      .observe(tile, {attributes: true, attributeFilter: ["data-state"]});
  };
  watch();
}
"""


def open_board(page: Page, rig: Rig) -> None:
    wait_served(rig)
    page.goto(site_url(rig, "/board/L1"))
    page.wait_for_selector('#link[data-state="live"]', timeout=WAIT_MS)
    page.wait_for_selector(TILE.format("S03") + '[data-state="running"]', timeout=WAIT_MS)


def test_a_cord_pull_turns_its_tile_amber_then_the_stop_turns_the_banner_red(page, line_rig):
    open_board(page, line_rig)
    assert page.get_attribute(BANNER, "data-state") == "running"
    page.evaluate(RECORD_STATES)

    line_rig.line.do("pull", "L1", "S03")
    # amber first: the call (the 2 s fixed-position stop comes after)
    page.wait_for_function("window.shown.includes('called')", timeout=WAIT_MS)
    assert page.inner_text(TILE.format("S03") + " .cause").lower() == "cord"
    page.wait_for_selector(BANNER + '[data-state="stopped"]', timeout=WAIT_MS)
    assert page.evaluate("window.shown").index("called") < page.evaluate("window.shown").index(
        "stopped"
    )
    assert "STOPPED" in page.inner_text(BANNER)
    assert page.get_attribute(TILE.format("S03"), "data-state") == "stopped"
    assert page.get_attribute(TILE.format("S02"), "data-state") == "running"
    # red, as IEC 60073 and the stack light have it
    colour = page.eval_on_selector(BANNER, "e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(216, 30, 30)"

    line_rig.line.do("reset", "L1", "S03")
    page.wait_for_selector(BANNER + '[data-state="running"]', timeout=WAIT_MS)


def test_the_page_says_stale_and_comes_back_by_itself_after_a_gateway_restart(page, line_rig):
    open_board(page, line_rig)
    line_rig.gateway.stop()
    page.wait_for_selector('#link[data-state="stale"]', timeout=WAIT_MS)
    assert "STALE" in page.inner_text("#link")

    line_rig.start_gateway()
    page.wait_for_selector('#link[data-state="live"]', timeout=WAIT_MS)
    line_rig.line.do("pull", "L1", "S03")  # the page shows what the new gateway pushes
    page.wait_for_selector(TILE.format("S03") + ':not([data-state="running"])', timeout=WAIT_MS)
    line_rig.line.do("reset", "L1", "S03")


@pytest.mark.skipif(
    not hasattr(contract, "Operator"),
    reason="operator actions need issue 9's core (contract.Operator, Plant.check), not landed yet",
)
def test_a_supervisor_acknowledges_a_quality_call_in_the_console_and_the_tower_changes(
    browser, tmp_path: Path
):
    plant = tomllib.loads(E2E_PLANT.read_text())
    plant["lines"][0]["stop"] = {"mode": "seconds", "seconds": 600}  # no stop while we click
    with Rig(plant, tmp_path / "rig", stations=["L1/S03"]) as rig:
        rig.wait_line_up()
        wait_served(rig)
        context = browser.new_context()
        try:
            board, console = context.new_page(), context.new_page()
            open_board(board, rig)
            console.goto(site_url(rig, "/console", SUPERVISOR))
            rig.line.do("press", "L1", "S03", button="qual")
            board.wait_for_selector(TILE.format("S03") + '[data-state="called"]', timeout=WAIT_MS)
            assert rig.line.lamps("L1", "S03")["amber"] == "on"

            console.click('tr[data-call] button[data-action="acknowledge"]', timeout=WAIT_MS)
            console.wait_for_selector("#message:has-text('acknowledge done')", timeout=WAIT_MS)
            board.wait_for_selector(
                TILE.format("S03") + '[data-state="acknowledged"]', timeout=WAIT_MS
            )
            assert "ACK supervisor" in board.inner_text(TILE.format("S03"))
            # the station's own tower: amber slow, someone is on the way (docs/stack-light.md)
            wait_for("S03 amber slow", lambda: rig.line.lamps("L1", "S03")["amber"] == "slow")
        finally:
            context.close()
