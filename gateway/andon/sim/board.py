"""One virtual board: the real firmware in a MicroPython VM process, driven from outside.

Its flash is a directory of its own (config.json, boot counter, outbox), so a power cut is a
SIGKILL of the process and a restart boots from what that flash holds. The board listens on a
loopback control port (JSON lines, see virtual/vboard.py) for pins, tags and lamp read-back.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from andon.sim.mosquitto import free_port
from andon.sim.vm import compiled_paths, micropython_exe, vm_env

RESET_EXIT = 75  # a virtual board that asked for machine.reset() exits with this
# The 64-bit VM's heap for a simulated board: 128K is at the edge for the full scenario, and a
# sim must not run short. The firmware's heap budget is held by the 32-bit heap tests.
SIM_HEAP = "256K"
# The VM's own heap at start (and asyncio's), noted before the virtual board's code loads:
# virtual/vboard.py counts it in the firmware's share of the heap (`firmware_heap`).
LAUNCH = "import gc, asyncio; gc.collect(); VM_BASE = gc.mem_alloc(); import vboard"


class BoardError(RuntimeError):
    pass


class VirtualBoard:
    def __init__(
        self,
        flash: Path,
        config: dict[str, Any] | None = None,
        uid: str = "246F28000001",
        heap: str = "128K",
        compiled: bool = True,
        bits: int = 64,
        firmware_heap: int | None = None,
    ) -> None:
        self.flash = flash
        self.config = config
        self.uid = uid
        self.heap = heap
        self.compiled = compiled  # run .mpy modules, as a flashed board does
        self.bits = bits  # 32: the VM whose objects are an ESP32's size (andon.sim.vm)
        # bytes of `heap` the firmware may use; the virtual hardware's heap comes on top
        self.firmware_heap = firmware_heap
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._buf = b""

    @property
    def console(self) -> Path:
        return self.flash.with_name(self.flash.name + ".console.log")

    def start(
        self,
        timeout: float = 20.0,
        wifi: bool = True,
        clock: bool = True,
        inputs: dict[str, bool] | None = None,
    ) -> None:
        """Boot from the flash dir; `inputs` are levels already applied at power-up (a cord
        that is not pulled), by input name: True = active."""
        self.flash.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            (self.flash / "config.json").write_text(json.dumps(self.config, indent=1))
        self.port = free_port()
        (self.flash / "vboard.json").write_text(
            json.dumps(
                {
                    "uid": self.uid,
                    "control_port": self.port,
                    "wifi": wifi,
                    "clock": clock,
                    "inputs": inputs or {},
                    "firmware_heap": self.firmware_heap,
                }
            )
        )
        log = self.console.open("ab")
        self.proc = subprocess.Popen(
            [micropython_exe(self.bits), "-X", f"heapsize={self.heap}", "-c", LAUNCH],
            cwd=self.flash,
            env=vm_env(compiled_paths() if self.compiled else None),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal is the demo's to handle
        )
        log.close()
        self._connect(timeout)

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BoardError(f"virtual board exited at start:\n{self.console_tail()}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                self._buf = b""
                return
            except OSError:
                time.sleep(0.02)
        self.power_cut()
        raise BoardError(f"virtual board did not open its control port:\n{self.console_tail()}")

    def console_tail(self, lines: int = 30) -> str:
        if not self.console.exists():
            return ""
        return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        if self._sock is None:
            raise BoardError("virtual board is not running")
        self._sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        while b"\n" not in self._buf:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise BoardError(f"virtual board closed its control port:\n{self.console_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise BoardError(reply["error"])
        return reply

    # -- what a person does at the station --
    def set_input(self, name: str, active: bool, settle: bool = False) -> dict[str, Any]:
        """Drive the input's level; with `settle`, return once the board's debounce took it.

        Its reply's `at` is when the level changed (ns on the wall clock)."""
        return self.call("input", name=name, active=active, settle=settle)

    def pull_cord(self, name: str = "cord") -> None:
        self.set_input(name, True, settle=True)

    def reset_cord(self, name: str = "cord") -> None:
        self.set_input(name, False, settle=True)

    def press(self, name: str, hold_ms: int = 60) -> None:
        """Press and release, each held until the board's debounce took it."""
        self.call("press", name=name, hold_ms=hold_ms)

    def place_tag(self, reader: str, uid: str) -> None:
        self.call("tag", reader=reader, uid=uid)

    def remove_tag(self, reader: str) -> None:
        self.call("untag", reader=reader)

    def pin(self, pin: int) -> dict[str, Any]:
        """An output pin: its `level`, its `toggles` so far, and the light task's `refreshes`."""
        return self.call("pin", pin=pin)

    def lamps(self) -> dict[str, str]:
        return self.call("lamps")["lamps"]

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def heap_shares(self) -> dict[str, int]:
        """Bytes held back from the firmware (`firmware_heap`) and taken by the virtual hardware."""
        return self.call("heap")

    # -- power --
    def power_cut(self) -> None:
        """SIGKILL: whatever was not on flash is gone, as when the plug is pulled."""
        self._close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        self.power_cut()

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def __enter__(self) -> VirtualBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
