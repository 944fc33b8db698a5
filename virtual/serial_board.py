# What a virtual serial board does at every reset (gateway/andon/sim/serial.py restarts the
# VM for each one): set the bench up, run boot.py, then main.py unless the reset came from
# the raw REPL, as a board does. Runs with `-i`, so the REPL follows whatever main.py leaves.
import os

from vdevices import bench

bench.uid = bytes.fromhex(os.getenv("VBOARD_UID"))
bench.wifi_started = True  # a virtual board's radio needs no credentials (as vboard.py)


def _run(name):
    try:
        f = open(name)
    except OSError:
        return
    with f:
        source = f.read()
    exec(source, {"__name__": "__main__"})


_run("boot.py")
if os.getenv("VBOARD_MAIN") == "1":
    _run("main.py")
