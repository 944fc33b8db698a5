"""Acting on a running virtual line from another terminal (`andon sim pull L1 S03` ...).

The process that runs the line serves JSON lines on a loopback port and writes `sim.json` in
its state dir (its pid, that port, and each station's board and flash dir). The CLI reads the
file, sends one request and prints the reply. Power cuts and restarts go through the owner,
which alone can start a board process again.

Request: {"verb": "pull", "line": "L1", "station": "S03", "args": {...}} or
{"verb": "lights", "line": "L1"}. Reply: {"ok": true, ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from andon.sim.line import SimError, VirtualLine

STATE_FILE = "sim.json"


class ControlError(RuntimeError):
    """No running line to talk to, or it refused the request."""


def handle(line: VirtualLine, request: dict[str, Any]) -> dict[str, Any]:
    verb = request.get("verb")
    if verb == "lights":
        return {"lights": line.line_lamps(str(request.get("line")))}
    args = request.get("args") or {}
    return line.do(str(verb), str(request.get("line")), str(request.get("station")), **args)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for raw in self.rfile:
            try:
                reply = {"ok": True, **handle(self.server.line, json.loads(raw))}
            except (SimError, ValueError, TypeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    line: VirtualLine


class ControlServer:
    """Serves the line on a free loopback port; `sim.json` says where, until `close()`."""

    def __init__(self, line: VirtualLine, state_dir: Path) -> None:
        self.state_file = state_dir / STATE_FILE
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.line = line
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        stations = {
            key: {"board": sb.board.uid, "flash": str(sb.board.flash)}
            for key, sb in line.boards.items()
        }
        state = {"pid": os.getpid(), "control_port": self.port, "stations": stations}
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=1))

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(state_dir: Path, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the line running from `state_dir`; its reply, or ControlError."""
    path = state_dir / STATE_FILE
    try:
        port = json.loads(path.read_text())["control_port"]
    except (OSError, ValueError, KeyError):
        raise ControlError(
            f"no running virtual line at {state_dir} (start one with `andon sim --config ...`)"
        ) from None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = sock.makefile("rb").readline()
    except OSError as exc:
        raise ControlError(f"the virtual line at {state_dir} does not answer: {exc}") from None
    if not reply:
        raise ControlError(f"the virtual line at {state_dir} closed the connection")
    answer = json.loads(reply)
    if not answer.pop("ok", False):
        raise ControlError(answer.get("error", "refused"))
    return answer
