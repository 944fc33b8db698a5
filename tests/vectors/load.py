"""Loading the shared contract vectors (docs/protocol.md) for both sides' tests."""

import json
from pathlib import Path

HERE = Path(__file__).parent


def load(name: str) -> dict:
    return json.loads((HERE / f"{name}.json").read_text())


def raw_payload(vector: dict) -> bytes:
    if "raw_repeat" in vector:
        r = vector["raw_repeat"]
        return (r["prefix"] + r["fill"] * r["count"] + r["suffix"]).encode()
    return vector["raw"].encode()
