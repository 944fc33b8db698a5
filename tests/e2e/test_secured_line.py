"""Virtual boards on a Mosquitto that enforces `andon provision`'s accounts and ACL: with the
provisioned configs (`andon sim --provisioned`) each board logs in with its own account and its
events reach the gateway's; with none, the broker turns the boards away."""

from __future__ import annotations

import pytest

from andon.config import load_plant
from andon.maint.provision import GATEWAY_USER
from andon.sim.line import SimError, VirtualLine
from andon.sim.observe import wait_for
from tests.e2e.test_flash import Subscriber, secured_broker
from tests.gateway.test_flash import make_plant


def links_up(line: VirtualLine) -> bool:
    return all(
        line.do("status", sb.line, sb.station)["link"] == "up" for sb in line.boards.values()
    )


def test_virtual_boards_log_in_with_their_provisioned_accounts(tmp_path):
    with secured_broker(tmp_path) as (plant, broker, secrets):
        config = load_plant(plant.config)
        gateway = Subscriber(broker.port, secrets[GATEWAY_USER], ["andon/v1/P1/+/+/evt"])
        try:
            with VirtualLine(config, tmp_path / "anonymous") as anonymous:
                wait_for(
                    "the broker turns anonymous boards away",
                    lambda: broker.log_path.read_text().count("not authorised") >= 2,
                )
                assert not any(
                    anonymous.do("status", sb.line, sb.station)["link"] == "up"
                    for sb in anonymous.boards.values()
                )
            with VirtualLine(config, tmp_path / "sim", provisioned=plant.provisioned) as line:
                wait_for("every board logged in", lambda: links_up(line), timeout=30)
                line.do("pull", "L1", "S02")
                seen: list[dict] = []
                while not any(e["kind"] == "cord_pulled" for e in seen):
                    seen.append(gateway.wait("andon/v1/P1/L1/S02/evt")[1])
        finally:
            gateway.close()
    assert {e["board"] for e in seen} == {"246F28000002"}


def test_a_board_missing_from_the_provisioned_dir_is_named(tmp_path):
    plant = make_plant(tmp_path)
    (plant.provisioned / "boards" / "246F28000002" / "config.json").unlink()
    with pytest.raises(SimError) as refused:
        VirtualLine(load_plant(plant.config), tmp_path / "sim", provisioned=plant.provisioned)
    assert "246F28000002/config.json" in str(refused.value)
    assert f"andon provision --out {plant.provisioned} writes it" in str(refused.value)
