"""The gateway's log: plain lines for a person, or (`--log-format json`) one JSON object a
line for a collector (journald, Loki, Elasticsearch), with the fields of what happened.

Calls, line stops and alerts are logged as they are committed, one line each: what people
were told is on record in the log too, not only on MQTT.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from andon.core.effects import Alert, CallRecord, Effect, LineChanged

log = logging.getLogger("andon.plant")

FIELDS = "andon"  # the LogRecord attribute (`extra={FIELDS: {...}}`) a JSON line carries


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields}` on one line; an exception as `error`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, FIELDS, {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _call_phase(call: CallRecord) -> str:
    if call.resolved is not None:
        return "resolved"
    if call.stopped is not None:
        return "stopped the line"
    return "acknowledged" if call.acknowledged is not None else "opened"


def log_effects(effects: list[Effect]) -> None:
    """One line per call change, line state change and alert among `effects`."""
    for effect in effects:
        if isinstance(effect, CallRecord):
            phase = _call_phase(effect)
            fields = {"event": "call", "phase": phase, "call": effect.id, "line": effect.line}
            fields |= {"station": effect.station, "cause": effect.cause}
            log.info(
                "call %s at %s/%s %s",
                effect.id,
                effect.line,
                effect.station,
                phase,
                extra={FIELDS: fields},
            )
        elif isinstance(effect, LineChanged):
            fields = {"event": "line", "line": effect.line, "state": effect.state}
            fields |= {"stopped": list(effect.stopped), "called": list(effect.called)}
            log.info("line %s %s", effect.line, effect.state, extra={FIELDS: fields})
        elif isinstance(effect, Alert):
            fields = {"event": "alert", "kind": effect.kind, "id": effect.id, "line": effect.line}
            fields |= {"station": effect.station, "to": effect.to, "tier": effect.tier}
            fields |= {"call": effect.call, "cause": effect.cause}
            log.warning("alert %s: %s", effect.kind, effect.text, extra={FIELDS: fields})
