"""The core's timer kinds, in the order timers due at the same moment fire."""

STOP, ESCALATE, OVERDUE, LOST, ALERT_CLOSE = range(5)

# A deadline already past when it is set (an event delivered late from a board's outbox) is
# moved this far after the core's now, so the rest of a replayed outbox (the reset that
# followed the pull) can arrive first.
LATE_GRACE_MS = 2_000
