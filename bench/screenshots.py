"""The README's pictures of the board and a report, made from the running system so they stay
true: `.venv/bin/python -m bench.screenshots` (writes docs/img/board.png, docs/img/reports.png).

The board: the example plant's line L1 on the e2e rig (Mosquitto, the gateway, virtual boards
running the firmware at three stations): a cord pulled at S03 that has stopped the line, a
quality call at S05 counting down to its stop, a kanban card posted at S04. The report: a
week of synthetic calls (bench.board's log generator) served by the same HTTP server.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

from bench.board import TOKEN, SyntheticGateway, _answers, big_log
from playwright.sync_api import Page, sync_playwright

from andon.config import hash_token
from andon.firmware_build import SOURCES as REPO
from andon.runtime.api import ApiServer
from andon.sim.mosquitto import free_port
from andon.sim.observe import wait_for
from andon.sim.rig import Rig

OUT = REPO / "docs" / "img"
VIEWPORT = {"width": 1280, "height": 720}


def board_picture(page: Page, workdir: Path) -> None:
    plant = tomllib.loads((REPO / "examples" / "plant.toml").read_text())
    plant["lines"][0]["stop"] = {"mode": "seconds", "seconds": 120}
    plant["api_tokens"] = [{"name": "screenshots", "hash": hash_token(TOKEN)}]
    with Rig(plant, workdir, stations=["L1/S03", "L1/S04", "L1/S05"]) as rig:
        rig.wait_line_up()
        wait_for("the board served", lambda: _answers(f"{rig.api_url}/health"), 30)
        page.goto(f"{rig.api_url.removesuffix('/api/v1')}/board/L1?token={TOKEN}")
        page.wait_for_selector('#link[data-state="live"]')
        rig.line.do("pull", "L1", "S03")
        rig.line.do("scan", "L1", "S04", uid="04B7C8D9E0F101", reader="post")
        page.wait_for_selector('.tile[data-station="S04"][data-material="true"]')
        page.wait_for_selector('.tile[data-station="S03"][data-state="called"]')
        wait_for("the stop due in 100 s", lambda: _stop_in(page) < 100, 30)
        rig.line.do("press", "L1", "S05", button="qual")
        page.wait_for_selector('.tile[data-station="S05"][data-state="called"]')
        page.screenshot(path=OUT / "board.png")


def _stop_in(page: Page) -> int:
    text = page.inner_text('.tile[data-station="S03"] .countdown')
    return int(text.split()[2]) if text else 999


def report_picture(page: Page, workdir: Path) -> None:
    config = big_log(workdir / "year.db", 30_000, http_port=free_port())
    server = ApiServer(config, SyntheticGateway(config))
    server.start()
    try:
        query = f"start=2025-01-01&end=2025-03-31&token={TOKEN}"
        page.goto(f"{server.url.removesuffix('/api/v1')}/reports?{query}")
        box = page.locator("#downtime-by_station").bounding_box()  # the chart, the top rows
        clip = {"x": box["x"], "y": box["y"], "width": 760, "height": min(box["height"], 480)}
        page.screenshot(path=OUT / "reports.png", clip=clip, full_page=True)
    finally:
        server.stop()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="andon-screens-") as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            board_picture(page, Path(tmp) / "rig")
            report_picture(page, Path(tmp))
        finally:
            browser.close()
    print(f"wrote {OUT / 'board.png'} and {OUT / 'reports.png'}")


if __name__ == "__main__":
    main()
