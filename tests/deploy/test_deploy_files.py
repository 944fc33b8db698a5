"""`deploy/` (issue #14, finding 6): the systemd unit verifies, the production Mosquitto
config runs for real (TLS, provisioned accounts and ACL, anonymous refused, autosave), and
the compose file builds the gateway from the Containerfile beside that config."""

from __future__ import annotations

import datetime
import json
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from andon.maint.provision import GATEWAY_USER
from andon.sim.mosquitto import Broker, free_port
from andon.sim.observe import wait_for

DEPLOY = Path(__file__).parents[2] / "deploy"
EXAMPLE = Path(__file__).parents[2] / "examples" / "plant.toml"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_the_gateway_unit_verifies_and_is_hardened(tmp_path):
    unit = (DEPLOY / "systemd" / "andon-gateway.service").read_text()
    andon = Path(sys.executable).with_name("andon")
    local = tmp_path / "andon-gateway.service"
    local.write_text(unit.replace("/usr/local/bin/andon", str(andon)))
    run = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "andon-gateway.service" not in run.stderr  # no warning about our unit
    for setting in (
        "DynamicUser=yes",
        "StateDirectory=andon",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ):
        assert setting in unit.splitlines()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / "server.crt", directory / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def _production_conf(tmp_path: Path, provisioned: Path, tls_port: int, plain_port: int) -> str:
    """deploy/mosquitto/mosquitto.conf with its paths and ports moved under the test's dir."""
    crt, key = _self_signed(tmp_path)
    moves = {
        "/etc/mosquitto/andon/passwd": str(provisioned / "mosquitto" / "passwd"),
        "/etc/mosquitto/andon/acl": str(provisioned / "mosquitto" / "acl"),
        "/etc/mosquitto/certs/server.crt": str(crt),
        "/etc/mosquitto/certs/server.key": str(key),
        "/var/lib/mosquitto/": f"{tmp_path}/data/",
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
        "log_dest stderr": f"log_dest file {tmp_path / 'mosquitto.log'}",
    }
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for old, new in moves.items():
        assert old in conf
        conf = conf.replace(old, new)
    return conf + "user root\n"


def _connect(port: int, user: str | None, password: str | None, ca: Path | None) -> int:
    """The CONNACK's reason code (0: accepted)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{port}")
    if user:
        client.username_pw_set(user, password)
    if ca:
        client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    codes: list[int] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason.value)
    client.connect("localhost" if ca else "127.0.0.1", port)
    client.loop_start()
    try:
        wait_for("the CONNACK", lambda: codes)
    finally:
        client.loop_stop()
        client.disconnect()
    return codes[0]


def test_the_production_mosquitto_config_runs_with_tls_and_provisioned_accounts(tmp_path):
    provisioned = tmp_path / "provisioned"
    andon = Path(sys.executable).with_name("andon")
    subprocess.run(
        [str(andon), "provision", "--config", str(EXAMPLE), "--out", str(provisioned)],
        check=True,
        capture_output=True,
    )
    secrets = json.loads((provisioned / "secrets.json").read_text())
    (tmp_path / "data").mkdir()
    tls_port, plain_port = free_port(), free_port()
    broker = Broker(tmp_path, plain_port)
    conf = _production_conf(tmp_path, provisioned, tls_port, plain_port)
    broker.write_conf = lambda: broker.conf_path.write_text(conf)  # the file as deployed
    broker.start()
    try:
        ca = tmp_path / "server.crt"
        assert _connect(tls_port, GATEWAY_USER, secrets[GATEWAY_USER], ca) == 0
        assert _connect(tls_port, None, None, ca) != 0  # anonymous: refused
        assert _connect(tls_port, GATEWAY_USER, "wrong", ca) != 0
        assert _connect(plain_port, GATEWAY_USER, secrets[GATEWAY_USER], None) == 0
    finally:
        broker.stop()
    assert "autosave_interval 60" in conf and "persistence true" in conf
    assert (tmp_path / "data" / "mosquitto.db").exists()


def test_the_compose_file_builds_the_gateway_and_mounts_the_broker_config():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "gateway"}
    build = services["gateway"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "Containerfile"
    ).resolve()
    mounts = [v.split(":") for v in services["mosquitto"]["volumes"]]
    conf = next(m for m in mounts if m[1] == "/mosquitto/config/mosquitto.conf")
    assert (DEPLOY / conf[0]).resolve() == (DEPLOY / "mosquitto" / "mosquitto.conf").resolve()
    # the broker config's password file and ACL are where compose mounts the provision dir
    provision_mount = next(m for m in mounts if m[0] == "./provisioned/mosquitto")
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert f"password_file {provision_mount[1]}/passwd" in text
    assert "andon" in (DEPLOY / "Containerfile").read_text()
