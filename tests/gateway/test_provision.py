"""Provisioning: configs from plant + profile, private files, kept or rotated passwords, and
a real Mosquitto enforcing the generated password file and ACL."""

import json
import queue
import shutil
import stat

import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from andon.cli import app
from andon.config import load_plant
from andon.maint.hardware import PROFILES_DIR, PinRuleError
from andon.maint.provision import Network, ProvisionError, check_board_config, provision
from andon.sim.mosquitto import start_broker

PLANT = """
site = "P1"

[broker]
host = "10.0.0.5"
port = 1883

[[lines]]
id = "L1"
name = "Assembly"

[[lines.stations]]
id = "S01"
name = "Frame"
board = "AAAA00000001"
profile = "esp32-devkitc"
readers = ["post", "badge"]

[[lines.stations]]
id = "S02"
name = "Test"
board = "AAAA00000002"
profile = "esp32-s3-ws2812"

[[lines]]
id = "L2"
name = "Motors"

[[lines.stations]]
id = "S01"
name = "Winding"
board = "BBBB00000001"
profile = "esp32-s3-devkitc-1"
readers = ["receive"]
"""
BOARDS = ["AAAA00000001", "AAAA00000002", "BBBB00000001"]
GATEWAY = "andon-gateway"


@pytest.fixture
def plant_file(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text(PLANT)
    return path


def _provision(plant_file, out, *extra):
    result = CliRunner().invoke(
        app, ["provision", "--config", str(plant_file), "--out", str(out), *extra]
    )
    return result


def _secrets(out):
    return json.loads((out / "secrets.json").read_text())


def _config(out, board):
    return json.loads((out / "boards" / board / "config.json").read_text())


def test_every_board_gets_its_config_and_nothing_secret_is_printed(plant_file, tmp_path):
    out = tmp_path / "out"
    result = _provision(plant_file, out, "--wifi-ssid", "plant-iot")
    assert result.exit_code == 0, result.output
    passwords = _secrets(out)
    assert set(passwords) == {*BOARDS, GATEWAY}
    assert len(set(passwords.values())) == 4 and all(len(p) >= 32 for p in passwords.values())
    assert not any(p in result.output for p in passwords.values())
    assert "provisioned 3 boards" in result.output

    frame = _config(out, "AAAA00000001")
    assert (frame["site"], frame["line"], frame["station"], frame["board"]) == (
        "P1", "L1", "S01", "AAAA00000001",
    )  # fmt: skip
    assert frame["profile"] == "esp32-devkitc"
    assert frame["broker"] == {
        "host": "10.0.0.5", "port": 1883, "username": "AAAA00000001",
        "password": passwords["AAAA00000001"], "tls": False, "keepalive": 30,
    }  # fmt: skip
    assert frame["wifi"] == {"ssid": "plant-iot", "password": ""}
    cord = next(i for i in frame["inputs"] if i["name"] == "cord")
    assert cord == {"name": "cord", "role": "cord", "pin": 4, "pull": "up", "active": 1}
    assert {"name": "cord2", "role": "cord", "adc": 36, "supervised": True} in frame["inputs"]
    assert [(r["name"], r["role"], r["cs"]) for r in frame["rfid"]["readers"]] == [
        ("post", "post", 5),
        ("badge", "badge", 15),
    ]
    assert frame["light"]["driver"] == "gpio" and frame["light"]["segments"]["red"]["pin"] == 25

    test_station = _config(out, "AAAA00000002")
    assert "rfid" not in test_station  # no readers configured at L1/S02
    assert test_station["light"]["driver"] == "ws2812"
    winding = _config(out, "BBBB00000001")
    assert [(r["name"], r["cs"]) for r in winding["rfid"]["readers"]] == [("receive", 10)]
    for board in BOARDS:
        check_board_config(_config(out, board), board)


def test_boards_get_addresses_never_names(plant_file, tmp_path):
    # A board's own name lookup would block it until DNS answers: provisioning resolves the
    # names here, and with TLS keeps the broker's name for the certificate check.
    plant_file.write_text(PLANT.replace('host = "10.0.0.5"', 'host = "localhost"\ntls = true'))
    out = tmp_path / "out"
    result = _provision(plant_file, out, "--ntp", "localhost:1123")
    assert result.exit_code == 0, result.output
    broker = _config(out, "AAAA00000001")["broker"]
    assert (broker["host"], broker["server_name"], broker["port"]) == (
        "127.0.0.1",
        "localhost",
        1883,
    )
    assert _config(out, "AAAA00000001")["ntp"] == "127.0.0.1:1123"
    refused = _provision(plant_file, tmp_path / "v6", "--broker-host", "::1", "--ntp", "10.0.0.1")
    assert refused.exit_code == 2
    assert "broker host '::1' does not resolve to an IPv4 address" in refused.output
    assert not (tmp_path / "v6" / "boards").exists()


def test_tls_without_ntp_is_refused(plant_file, tmp_path):
    # A fresh board's clock reads 2000-01-01: it could never check a certificate's dates.
    plant_file.write_text(PLANT.replace("port = 1883", "port = 8883\ntls = true"))
    refused = _provision(plant_file, tmp_path / "out")
    assert refused.exit_code == 2
    assert "broker.tls needs ntp" in refused.output
    assert not (tmp_path / "out" / "boards").exists()
    assert _provision(plant_file, tmp_path / "ok", "--ntp", "10.0.0.1").exit_code == 0
    assert _config(tmp_path / "ok", "AAAA00000001")["broker"]["tls"] is True


def test_files_are_0600_in_0700_directories(plant_file, tmp_path):
    out = tmp_path / "out"
    assert _provision(plant_file, out).exit_code == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    dirs = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert {str(p.relative_to(out)) for p in files} == {
        "secrets.json",
        "mosquitto/passwd",
        "mosquitto/acl",
        "mosquitto/andon.conf",
        *(f"boards/{board}/config.json" for board in BOARDS),
    }
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {0o700}


def test_a_rerun_keeps_passwords_and_rotate_changes_them(plant_file, tmp_path):
    out = tmp_path / "out"
    assert _provision(plant_file, out).exit_code == 0
    first = _secrets(out)
    again = _provision(plant_file, out)
    assert again.exit_code == 0 and "new passwords" not in again.output
    assert _secrets(out) == first
    assert _config(out, BOARDS[0])["broker"]["password"] == first[BOARDS[0]]

    rotated = _provision(plant_file, out, "--rotate")
    assert rotated.exit_code == 0
    after = _secrets(out)
    assert set(after) == set(first)
    assert all(after[user] != first[user] for user in first)
    assert _config(out, BOARDS[0])["broker"]["password"] == after[BOARDS[0]]
    assert not any(p in rotated.output for p in after.values())


def test_a_board_removed_from_the_plant_loses_its_account(plant_file, tmp_path):
    out = tmp_path / "out"
    assert _provision(plant_file, out).exit_code == 0
    smaller = PLANT[: PLANT.index('[[lines]]\nid = "L2"')]
    plant_file.write_text(smaller)
    result = _provision(plant_file, out)
    assert result.exit_code == 0
    assert "removed (no longer in the plant): BBBB00000001" in result.output
    assert "BBBB00000001" not in _secrets(out)
    assert "BBBB00000001" not in (out / "mosquitto" / "passwd").read_text()
    assert not (out / "boards" / "BBBB00000001" / "config.json").exists()


def test_a_station_with_an_unknown_profile_or_too_many_readers_is_refused(plant_file, tmp_path):
    out = tmp_path / "out"
    plant_file.write_text(
        PLANT.replace('profile = "esp32-s3-ws2812"', 'profile = "esp8266"').replace(
            'readers = ["receive"]', 'readers = ["receive", "badge", "post"]'
        )
    )
    result = _provision(plant_file, out)
    assert result.exit_code == 2
    assert "L1/S02 (board AAAA00000002): unknown hardware profile 'esp8266'" in result.output
    assert "L2/S01 (board BBBB00000001): 3 readers configured" in result.output
    assert not out.exists()  # nothing written for a plant that cannot be provisioned


def test_a_station_whose_profile_breaks_its_chip_rules_is_refused(plant_file, tmp_path):
    profiles = tmp_path / "profiles"
    shutil.copytree(PROFILES_DIR, profiles)
    broken = profiles / "esp32-devkitc.toml"
    broken.write_text(broken.read_text().replace("adc = 36", "adc = 25"))
    with pytest.raises(ProvisionError, match=r"L1/S01 \(board AAAA00000001\): .*GPIO25"):
        provision(load_plant(plant_file), tmp_path / "out", profiles_dir=profiles)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("light", "segments", "red", "pin"), 34),
        (("inputs", 0, "pin"), 7),
        (("inputs", 6, "adc"), 26),
        (("rfid", "readers", 1, "cs"), 4),
    ],
)
def test_a_board_config_that_breaks_its_chip_rules_is_refused(plant_file, tmp_path, edit, message):
    out = tmp_path / "out"
    provision(load_plant(plant_file), out)
    config = _config(out, "AAAA00000001")
    *path, leaf = edit
    node = config
    for key in path:
        node = node[key]
    node[leaf] = message
    expected = {
        34: r"GPIO34 \(light\.red\): input-only pin",
        7: r"GPIO7 \(inputs\[0\] cord\): reserved, wired to the module's SPI flash",
        26: r"GPIO26 \(inputs\[6\] cord2\): ADC2 pin, unreadable while Wi-Fi is on",
        4: r"GPIO4: used twice, by inputs\[0\] cord and rfid\.readers\[1\]\.cs",
    }[message]
    with pytest.raises(PinRuleError, match=expected):
        check_board_config(config, "config.json")


def test_a_board_config_with_a_normally_open_cord_or_unknown_key_is_refused(plant_file, tmp_path):
    out = tmp_path / "out"
    provision(load_plant(plant_file), out)
    config = _config(out, "AAAA00000001")
    config["inputs"][0]["active"] = 0
    with pytest.raises(ProvisionError, match="input cord: a cord must be fail-safe"):
        check_board_config(config, "config.json")
    config = _config(out, "AAAA00000001") | {"colour": "red"}
    with pytest.raises(ProvisionError, match=r"config\.json: colour: Extra inputs"):
        check_board_config(config, "config.json")


def test_the_firmware_accepts_the_generated_configs(plant_file, tmp_path, mpy):
    out = tmp_path / "out"
    network = Network(wifi_ssid="plant-iot", ntp="10.0.0.1")
    provision(load_plant(plant_file), out, network=network)
    for board in BOARDS:
        shutil.copy(out / "boards" / board / "config.json", mpy.flash / f"{board}.json")
    result = mpy.run(
        f"""
from andon import config
from vtest import emit
out = {{}}
for board in {BOARDS!r}:
    cfg = config.load(board + ".json")
    out[board] = [cfg["board"], cfg["station"], [i["name"] for i in cfg["inputs"]],
                  cfg["light"]["driver"], cfg["broker"]["username"], cfg["ntp"]]
emit(out)
"""
    )
    names = ["cord", "maint", "qual", "material", "ack", "cycle", "cord2"]
    assert result.data == {
        "AAAA00000001": ["AAAA00000001", "S01", names, "gpio", "AAAA00000001", "10.0.0.1"],
        "AAAA00000002": ["AAAA00000002", "S02", names, "ws2812", "AAAA00000002", "10.0.0.1"],
        "BBBB00000001": ["BBBB00000001", "S01", names, "gpio", "BBBB00000001", "10.0.0.1"],
    }


# --- against a real Mosquitto with the generated password file and ACL -------------------


class Client:
    """A paho client that records what it receives and how its connection went."""

    def __init__(self, broker, user, password, name):
        self.got: queue.Queue = queue.Queue()
        self.connected: queue.Queue = queue.Queue()
        self.dropped: queue.Queue = queue.Queue()
        self.mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311
        )
        self.mqtt.username_pw_set(user, password)
        self.mqtt.on_message = lambda c, u, m: self.got.put((m.topic, m.payload))
        self.mqtt.on_connect = lambda c, u, f, rc, p: self.connected.put(rc)
        self.mqtt.on_disconnect = lambda c, u, f, rc, p: self.dropped.put(rc)
        self.mqtt.connect(broker.host, broker.port)
        self.mqtt.loop_start()

    def connect_result(self):
        return self.connected.get(timeout=5)

    def subscribe(self, topic):
        done: queue.Queue = queue.Queue()
        self.mqtt.on_subscribe = lambda c, u, mid, codes, p: done.put(codes)
        self.mqtt.subscribe(topic, qos=1)
        return done.get(timeout=5)

    def publish(self, topic, payload, retain=False):
        self.mqtt.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self):
        self.mqtt.loop_stop()
        self.mqtt.disconnect()


@pytest.fixture
def secured_broker(plant_file, tmp_path):
    out = tmp_path / "out"
    provision(load_plant(plant_file), out)
    conf = (out / "mosquitto" / "andon.conf").read_text()
    clients: list[Client] = []
    with start_broker(tmp_path / "broker", extra_conf=conf) as broker:

        def connect(user, password, name):
            client = Client(broker, user, password, name)
            clients.append(client)
            return client

        try:
            yield _secrets(out), connect
        finally:
            for client in clients:
                client.close()


def test_a_board_publishes_under_its_own_station_only(secured_broker):
    passwords, connect = secured_broker
    gateway = connect(GATEWAY, passwords[GATEWAY], "gw")
    assert gateway.connect_result() == 0
    assert not any(code.is_failure for code in gateway.subscribe("andon/v1/+/+/+/evt"))
    board = connect("AAAA00000001", passwords["AAAA00000001"], "board-1")
    assert board.connect_result() == 0

    board.publish("andon/v1/P1/L1/S01/evt", b'{"n": 1}')
    assert gateway.got.get(timeout=5) == ("andon/v1/P1/L1/S01/evt", b'{"n": 1}')

    # An ACL-denied publish is acknowledged (MQTT 3.1.1 has no way to refuse it) and never
    # delivered; Mosquitto 2.0.11 and later then also close the connection (MQTT-3.3.5-2).
    board.publish("andon/v1/P1/L1/S02/evt", b'{"spoof": true}')
    with pytest.raises(queue.Empty):
        gateway.got.get(timeout=1)
    if not board.dropped.empty():
        assert board.connect_result() == 0  # paho reconnects by itself
    board.publish("andon/v1/P1/L1/S01/evt", b'{"n": 2}')
    assert gateway.got.get(timeout=5) == ("andon/v1/P1/L1/S01/evt", b'{"n": 2}')


def test_a_board_reads_its_own_station_and_line_but_not_another_station(secured_broker):
    passwords, connect = secured_broker
    gateway = connect(GATEWAY, passwords[GATEWAY], "gw")
    assert gateway.connect_result() == 0
    for station in ("S01", "S02"):
        gateway.publish(f"andon/v1/P1/L1/{station}/state", station.encode(), retain=True)
    gateway.publish("andon/v1/P1/L1/state", b"line", retain=True)

    board = connect("AAAA00000001", passwords["AAAA00000001"], "board-1")
    assert board.connect_result() == 0
    board.subscribe("andon/v1/P1/L1/+/state")
    board.subscribe("andon/v1/P1/L1/state")
    seen = {board.got.get(timeout=5), board.got.get(timeout=5)}
    assert seen == {("andon/v1/P1/L1/S01/state", b"S01"), ("andon/v1/P1/L1/state", b"line")}
    with pytest.raises(queue.Empty):
        board.got.get(timeout=1)  # S02's state is not for this board


def test_a_board_reads_its_lines_owner_and_every_gateways_status_not_another_lines_owner(
    secured_broker,
):
    passwords, connect = secured_broker
    gateway = connect(GATEWAY, passwords[GATEWAY], "gw")
    assert gateway.connect_result() == 0
    retained = {
        "andon/v1/P1/L1/gateway": b"L1 owner",
        "andon/v1/P1/L2/gateway": b"L2 owner",
        "andon/v1/gateway/a/status": b"a",
        "andon/v1/gateway/status": b"the one gateway",
    }
    for topic, payload in retained.items():  # several gateways write these
        gateway.publish(topic, payload, retain=True)

    board = connect("AAAA00000001", passwords["AAAA00000001"], "board-1")
    assert board.connect_result() == 0
    # what the firmware subscribes to (wire.Topics.downlinks): granted, not refused
    for topic in ("andon/v1/P1/L1/gateway", "andon/v1/gateway/+/status", "andon/v1/gateway/status"):
        assert not any(code.is_failure for code in board.subscribe(topic)), topic
    seen = {board.got.get(timeout=5) for _ in range(3)}
    assert seen == {(t, retained[t]) for t in retained if t != "andon/v1/P1/L2/gateway"}
    board.subscribe("andon/v1/P1/+/gateway")
    assert board.got.get(timeout=5) == ("andon/v1/P1/L1/gateway", b"L1 owner")
    with pytest.raises(queue.Empty):
        board.got.get(timeout=1)  # L2's owner is not for this board


def test_a_wrong_password_or_an_anonymous_client_is_refused(secured_broker):
    passwords, connect = secured_broker
    wrong = connect("AAAA00000001", passwords["AAAA00000002"], "board-1")
    assert wrong.connect_result() == "Not authorized"
    anonymous = connect(None, None, "nobody")
    assert anonymous.connect_result() == "Not authorized"
    right = connect("AAAA00000001", passwords["AAAA00000001"], "board-1b")
    assert right.connect_result() == 0


def test_only_the_gateway_account_writes_downlinks(secured_broker):
    passwords, connect = secured_broker
    downlinks = [
        "andon/v1/P1/L1/S01/state",  # the board's own
        "andon/v1/P1/L1/S01/ack",
        "andon/v1/P1/L1/S02/state",  # another station's
        "andon/v1/P1/L1/S02/ack",
        "andon/v1/P1/L1/state",  # its line's
        "andon/v1/gateway/status",
        "andon/v1/gateway/a/status",  # one of several gateways'
        "andon/v1/P1/L1/gateway",  # its line's owner
    ]
    for n, topic in enumerate(downlinks):  # a denied publish may close the connection: one each
        board = connect("AAAA00000001", passwords["AAAA00000001"], f"board-{n}")
        assert board.connect_result() == 0
        board.publish(topic, b'{"forged": true}', retain=True)
        board.close()
    gateway = connect(GATEWAY, passwords[GATEWAY], "gw")
    assert gateway.connect_result() == 0
    gateway.subscribe("andon/v1/#")
    marker = ("andon/v1/P1/L1/MARK/state", b"marker")
    gateway.publish(*marker)  # delivered after every retained message the broker holds
    seen = []
    while (got := gateway.got.get(timeout=5)) != marker:
        seen.append(got)
    assert seen == []  # no forged downlink was kept
