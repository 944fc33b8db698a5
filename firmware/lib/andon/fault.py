# The last resort around the whole boot (main.py): an exception nothing else caught (a pin the
# chip refuses while the Station is built, a bug in a task) ends in andon.crash, which keeps it on
# flash for the next birth (reset cause + last error), shows the fault pattern and resets the board
# after a back-off. This module is what a running board keeps: the error for its births, and the
# guard. andon.crash is loaded only once something failed.
import os

import hal

ERROR_FILE = "fault.txt"
COUNT_FILE = "fault.count"  # faults in a row (andon.crash), cleared by settled()
MAX_ERROR = 160  # characters kept: the birth carries them

wdt = None  # the watchdog once one runs: it cannot be stopped, so the back-off feeds it


def last_error():
    # What the last fault kept, until reported() forgets it; None if nothing was kept.
    try:
        with open(ERROR_FILE) as f:
            return f.read(MAX_ERROR) or None
    except OSError:
        return None


def _remove(*paths):
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass


def reported():
    # A birth carrying the error reached the broker.
    _remove(ERROR_FILE)


def settled():
    # The board ran long enough: the next fault's back-off starts from the first step.
    _remove(COUNT_FILE, COUNT_FILE + ".tmp")


def guard(boot):
    # Run boot(); any exception ends in andon.crash. SystemExit (a reset) and KeyboardInterrupt
    # (the REPL, for maintenance) pass through.
    try:
        boot()
    except Exception as e:
        try:
            from andon import crash

            crash.handle(e)
        finally:  # even when handling fails (no memory left): a reset beats a dead board
            hal.reset()
