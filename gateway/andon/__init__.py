"""Andon and kanban signalling: the gateway, its CLI, and the tools around the firmware."""

__version__ = "0.1.0"
