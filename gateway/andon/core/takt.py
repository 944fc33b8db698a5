"""Moved to andon.core.calendar; this name stays only until the core imports it from there."""

from andon.core.calendar import ShiftWindow, window_at

__all__ = ["ShiftWindow", "window_at"]
