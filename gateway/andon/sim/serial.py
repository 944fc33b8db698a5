"""A virtual board on a serial port: the MicroPython VM behind a pseudo-terminal.

`mpremote connect <board.port>` opens it exactly as it opens /dev/ttyUSB0. Behind the port a
small proxy (a thread of this process) owns the pty and forwards bytes to and from the VM, which
runs on a pty of its own with the board's flash directory as its working directory and the
flash's lib/ on its module path, after virtual/ (so `import hal` gets the bench).

A reset ends the VM process (the unix port exits on Ctrl-D at an empty prompt, on
machine.soft_reset() and on hal.reset()). The proxy then prints the line a board prints and
starts the VM again, as a board restarts: boot.py and main.py after a hard reset (hal.reset(),
which the VM ends with RESET_EXIT) or a soft reset from the normal REPL; boot.py only, back in
the raw REPL, after a soft reset from the raw REPL (mpremote's `soft-reset`).
virtual/serial_board.py is what the VM runs at each start.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import termios
import threading
import tty
from pathlib import Path

from andon.sim.board import RESET_EXIT, SIM_HEAP
from andon.sim.vm import compiled_paths, micropython_exe, vm_env

SOFT_REBOOT = b"MPY: soft reboot\r\n"
HARD_RESET = b"\r\nrst:0xc (SW_CPU_RESET)\r\n"  # what an ESP32's ROM prints after machine.reset()
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
RAW_PROMPT = RAW_BANNER + b">"
FRIENDLY_PROMPT = b">>> "
CTRL_A = b"\x01"


def _vm_terminal() -> tuple[int, int]:
    """A pty for the VM: raw (its REPL writes its own "\r\n"), but Ctrl-C still interrupts a
    running program (SIGINT), as on a board. The VM goes fully raw while it reads a line."""
    vm_side, vm_tty = os.openpty()
    tty.setraw(vm_tty)
    attrs = termios.tcgetattr(vm_tty)
    attrs[3] |= termios.ISIG
    termios.tcsetattr(vm_tty, termios.TCSANOW, attrs)
    return vm_side, vm_tty


class SerialBoard:
    """The VM behind `port`; its flash is `flash`, its machine.unique_id() is `uid`."""

    def __init__(self, flash: Path, uid: str = "246F28000001", heap: str = SIM_HEAP) -> None:
        self.flash = flash
        self.uid = uid
        self.heap = heap
        self.port = ""
        self.resets = 0
        self.proc: subprocess.Popen | None = None
        self._host = self._host_tty = self._vm = -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._raw = False  # the REPL mode the VM last prompted in
        self._entering_raw = False  # restarted after a raw-REPL reset, not yet prompting
        self._held = b""  # host input held until the restarted VM prompts
        self._pending = b""  # VM output held meanwhile
        self._tail = b""

    @property
    def console(self) -> Path:
        return self.flash.with_name(self.flash.name + ".console.log")

    def start(self) -> None:
        self.flash.mkdir(parents=True, exist_ok=True)
        self._host, self._host_tty = os.openpty()
        tty.setraw(self._host_tty)  # kept open: the port outlives each mpremote run
        self.port = os.ttyname(self._host_tty)
        os.set_blocking(self._host, False)
        self._spawn(run_main=True)
        self._thread = threading.Thread(target=self._serve, name=f"serial {self.uid}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._end_vm()
        for fd in (self._host, self._host_tty):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._host = self._host_tty = -1

    def __enter__(self) -> SerialBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def console_tail(self, lines: int = 30) -> str:
        if not self.console.exists():
            return ""
        return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])

    # -- the VM process --
    def _spawn(self, run_main: bool) -> None:
        self._vm, vm_tty = _vm_terminal()
        env = vm_env([compiled_paths()[0], Path("lib")])
        env.update(VBOARD_UID=self.uid, VBOARD_MAIN="1" if run_main else "0")
        command = [micropython_exe(), "-X", f"heapsize={self.heap}", "-i", "-m", "serial_board"]
        # setsid -c: the pty becomes the VM's controlling terminal, so Ctrl-C is a SIGINT
        self.proc = subprocess.Popen(
            ["setsid", "-c", *command],
            stdin=vm_tty,
            stdout=vm_tty,
            stderr=vm_tty,
            cwd=self.flash,
            env=env,
        )
        os.close(vm_tty)
        self._raw = self._entering_raw = not run_main
        self._tail = self._pending = b""

    def _end_vm(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        with contextlib.suppress(OSError):
            os.close(self._vm)
        self._vm = -1

    def _reset(self) -> None:
        """The VM ended: a reset. A hard one (hal.reset()) boots main.py; a soft one boots it
        unless it came from the raw REPL."""
        hard = self.proc is not None and self.proc.returncode == RESET_EXIT
        self._end_vm()
        self.resets += 1
        self._to_host(HARD_RESET if hard else SOFT_REBOOT)
        self._spawn(run_main=hard or not self._raw)

    # -- the proxy --
    def _serve(self) -> None:
        with self.console.open("ab") as log:
            while not self._stopping.is_set():
                ready, _, _ = select.select([self._host, self._vm], [], [], 0.05)
                if self._vm in ready:
                    self._from_vm(self._read(self._vm), log)
                if self._host in ready:
                    self._to_vm(self._read(self._host))
                if self.proc is not None and self.proc.poll() is not None:
                    self._drain_vm(log)
                    self._reset()

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except (BlockingIOError, OSError):  # EIO: the other side is closed
            return b""

    def _drain_vm(self, log) -> None:
        while select.select([self._vm], [], [], 0)[0] and (data := self._read(self._vm)):
            self._from_vm(data, log)

    def _from_vm(self, data: bytes, log) -> None:
        if not data:
            return
        log.write(data)
        log.flush()
        self._tail = (self._tail + data)[-64:]
        raw_at, friendly_at = self._tail.rfind(RAW_BANNER), self._tail.rfind(FRIENDLY_PROMPT)
        if raw_at != friendly_at:
            self._raw = raw_at > friendly_at
        if not self._entering_raw:
            self._to_host(data)
            return
        self._pending += data
        if FRIENDLY_PROMPT in self._pending:  # the REPL is up: into the raw REPL
            self._pending = b""
            os.write(self._vm, CTRL_A)
        elif RAW_PROMPT in self._pending:
            self._entering_raw = False
            self._to_host(self._pending[self._pending.index(RAW_PROMPT) :])
            held, self._held = self._held, b""
            self._to_vm(held)

    def _to_vm(self, data: bytes) -> None:
        if self._entering_raw:
            self._held += data
        elif data:
            with contextlib.suppress(OSError):  # the VM just ended: a reset loses it, as on a board
                os.write(self._vm, data)

    def _to_host(self, data: bytes) -> None:
        # Nobody may be reading the port: like a UART, what does not fit is lost.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._host, data)
