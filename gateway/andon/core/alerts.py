"""Alerts: raised, kept open while their condition lasts, routed by kind.

Every alert is an Alert effect (published on MQTT, POSTed to the webhooks its kind is routed
to in `[alerts.routes]`) and an open alert in the plant (status, API, board) until its
condition clears: a station back online, a wiring fault cleared, an overdue order received, a
lost card seen, a call's escalations when the call is resolved. Alerts with no condition to
clear (an unknown tag, a refused badge, events lost) close `[alerts] keep_open_s` later.
An alert raised again on the same subject while open counts a repeat and is not sent again.
Each change is an AlertRecord for the store. Notices (a station back online, a call's
lifecycle) are sent but never kept open.

State used: `_alerts`, `_alert_subjects`, `_counters` (alerts per line), timers.
"""

from __future__ import annotations

from andon.core.effects import Alert, AlertRecord
from andon.core.state import Call, OpenAlert
from andon.core.timers import ALERT_CLOSE

MAX_ONE_SHOT_OPEN = 500  # bounds the open alerts a flood of unknown tags can leave


class AlertRules:
    def _raise_alert(
        self,
        kind: str,
        subject: str,
        text: str,
        at: int,
        line: str | None = None,
        station: str | None = None,
        *,
        call: Call | None = None,
        tier: int | None = None,
        to: str | None = None,
        one_shot: bool = False,
        **extra: str,
    ) -> None:
        open_id = self._alert_subjects.get(subject)
        if open_id is not None:
            alert = self._alerts[open_id]
            alert.count += 1
            self._emit_alert_record(alert, None)
            return
        call_id = call.id if call else None
        alert_id = self._next_id("A", line or self.config.site)
        alert = OpenAlert(alert_id, kind, subject, text, at, line, station, call_id)
        if one_shot:
            due = self._due(at + self.config.alerts.keep_open_s * 1000)
            alert.close_due = self._arm(due, ALERT_CLOSE, alert.id)
        self._alerts[alert.id] = alert
        self._alert_subjects[subject] = alert.id
        self._send(
            kind, text, at, line, station, tier=tier, to=to, extra=extra, id=alert.id, call=call
        )
        self._emit_alert_record(alert, None)
        if one_shot:
            self._bound_one_shots(at)

    def _send(self, kind: str, text: str, at: int, line=None, station=None, *, call=None, **kw):
        """An Alert effect for MQTT and the webhooks `kind` is routed to."""
        self._out.append(
            Alert(
                self.config.site, kind, text, at, line, station,
                webhooks=self.config.webhooks_for(kind), call=call.id if call else None,
                cause=call.cause if call else None, opened=call.opened if call else None,
                acknowledged=call.acknowledged if call else None, **kw,
            )
        )  # fmt: skip

    def _clear_alert(self, subject: str, at: int) -> None:
        open_id = self._alert_subjects.get(subject)
        if open_id is not None:
            self._close_alert(self._alerts[open_id], at)

    def _close_alert(self, alert: OpenAlert, at: int) -> None:
        del self._alerts[alert.id]
        del self._alert_subjects[alert.subject]
        alert.close_due = None
        self._emit_alert_record(alert, max(at, alert.opened))

    def _close_call_alerts(self, call_id: str, at: int) -> None:
        for alert in [a for a in self._alerts.values() if a.call == call_id]:
            self._close_alert(alert, at)

    def _bound_one_shots(self, at: int) -> None:
        one_shots = [a for a in self._alerts.values() if a.close_due is not None]
        if len(one_shots) > MAX_ONE_SHOT_OPEN:
            self._close_alert(min(one_shots, key=lambda a: a.opened), at)

    def _emit_alert_record(self, alert: OpenAlert, closed: int | None) -> None:
        self._out.append(
            AlertRecord(
                self.config.site, alert.id, alert.kind, alert.text, alert.opened, alert.line,
                alert.station, alert.call, alert.count, closed,
            )
        )  # fmt: skip

    def _alert_view(self, alert: OpenAlert) -> dict:
        return {
            "id": alert.id,
            "kind": alert.kind,
            "text": alert.text,
            "ts": alert.opened,
            "line": alert.line,
            "station": alert.station,
            "call": alert.call,
            "count": alert.count,
        }
