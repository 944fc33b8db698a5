"""The gateway's pure core: records in, effects out (see andon.core.plant for the rules)."""

from andon.core.plant import Plant, Record, UnknownStation, date_event

__all__ = ["Plant", "Record", "UnknownStation", "date_event"]
