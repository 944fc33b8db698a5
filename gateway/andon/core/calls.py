"""Calls: one open call per cause and station, the stop each cause brings, escalation, and who
may acknowledge and resolve (docs/rules.md says the same in plain words).

Causes. A cord pull opens the station's `cord` call, a call button a call of its reason
(quality, maintenance, material, or a cause the plant file adds). A station holds at most one
open call per cause: a pull or press while that cause's call is open is a repeat of it (counted
on the call). A cord pull always opens (or repeats) the cord call, whatever else is open.

Resolution. A cord call is resolved only by `cord_reset`, once every cord of the station is
reset: the cord must physically be back. Other calls are resolved by a response (below) or
from the console.

Responses. An ack press or a badge tap acts on ONE call of the station: the most severe
unacknowledged call it may acknowledge; if none, the most severe acknowledged non-cord call it
may resolve. The ack button is anonymous and may do both; a badge may do what its role is
allowed for the call's cause (`[causes.X] acknowledge/resolve`). A badge that may do nothing
the station's calls need is refused: the tap is recorded in an alert (badge_denied) and
changes no call. The acknowledgement is dated when the responder was there (the event's time).

Stops. A cause's `stop` policy: "fixed_position" stops the line at the end of the takt cycle
the call was opened in (or the line's `stop.seconds` after it), `{ after_s = N }` N s after it
was opened, "never" not at all. Only a call still open at its deadline stops the line.

Escalation. Tiers sorted by `after_s`; each fires once, `after_s` after the call was opened,
if the call is then still unacknowledged (`on = "unacknowledged"`) or still open
(`on = "unresolved"`), for the causes it names. Each raises an escalation alert to its `to`.

State used: `_calls`, `_stations`, `_counters` (calls per line), timers.
"""

from __future__ import annotations

from andon import contract
from andon.config import Badge, Cause, StopAfter
from andon.core.effects import Annotation, CallRecord, project
from andon.core.state import Call, Station
from andon.core.stations import call_state
from andon.core.timers import ESCALATE, LATE_GRACE_MS, STOP

_UNLISTED = Cause()  # a cause the plant file does not name (a board configured for more)


class CallRules:
    def _init_calls(self) -> None:
        tiers = enumerate(self.config.escalation.tiers, start=1)
        self._tiers = sorted(tiers, key=lambda numbered: numbered[1].after_s)
        # looked up for every call: the config's pydantic private attributes are slow to read
        self._causes = {name: self.config.cause(name) for name in self.config.cause_names}
        self._notice_webhooks = self.config.notice_webhooks

    def _cause(self, name: str) -> Cause:
        return self._causes.get(name, _UNLISTED)

    def _severity(self, cause: str) -> int:
        return self._cause(cause).severity

    # --- inputs ---------------------------------------------------------------------------

    def _on_cord_pulled(self, station: Station, event: contract.CordPulled, at: int) -> None:
        if event.input not in station.pulled:
            station.pulled.append(event.input)
        self._open_call(station, "cord", at)

    def _on_cord_reset(self, station: Station, event: contract.CordReset, at: int) -> None:
        if event.input in station.pulled:
            station.pulled.remove(event.input)
        call_id = station.calls.get("cord")
        if call_id is not None and not station.pulled:
            self._resolve(self._calls[call_id], at, None, "cord_reset")

    def _on_call(self, station: Station, event: contract.Call, at: int) -> None:
        self._open_call(station, event.reason, at)

    def _on_ack(self, station: Station, event: contract.AckPressed, at: int) -> None:
        self._respond(station, at, None)

    # --- the call's life ------------------------------------------------------------------

    def _open_call(self, station: Station, cause: str, at: int) -> None:
        open_id = station.calls.get(cause)
        if open_id is not None:
            self._calls[open_id].repeats += 1
            return
        call = Call(self._next_id("C", station.line), station.line, station.id, cause, at)
        deadline = self._stop_deadline(station.line, cause, at)
        # A stop configured as immediate (0 s) comes with the call, unless the call itself
        # arrives late from an outbox replay: then it gets the grace like any past deadline.
        immediate = deadline is not None and deadline <= at and self.now - at < LATE_GRACE_MS
        if deadline is not None and not immediate:
            call.stop_due = self._arm(self._due(deadline), STOP, call.id)
        self._arm_next_tier(call, 0)
        self._calls[call.id] = call
        station.calls[cause] = call.id
        self._notice("call_opened", call, at)
        if immediate:
            self._stop_line(call, at)
            return
        self._emit_call(call)
        self._refresh(station, at)

    def _respond(self, station: Station, at: int, badge: Badge | None) -> None:
        """An ack press (badge None) or a badge tap: move one call forward (module docstring)."""
        calls = self._open_calls_by_severity(station)
        if not calls:
            return
        who = badge.person if badge else None
        how = "badge" if badge else "ack_button"
        unacknowledged = [c for c in calls if c.acknowledged is None]
        resolvable = [c for c in calls if c.acknowledged is not None and c.cause != "cord"]
        for call in unacknowledged:
            if badge is None or self._cause(call.cause).may("acknowledge", badge.role):
                self._acknowledge(call, at, who)
                return
        for call in resolvable:
            if badge is None or self._cause(call.cause).may("resolve", badge.role):
                self._resolve(call, at, who, how)
                return
        if unacknowledged or resolvable:
            self._badge_denied(station, badge, unacknowledged + resolvable, at)

    def _open_calls_by_severity(self, station: Station) -> list[Call]:
        calls = [self._calls[i] for i in station.calls.values()]
        return sorted(calls, key=lambda c: (-self._severity(c.cause), c.opened))

    def _badge_denied(self, station: Station, badge: Badge, calls: list[Call], at: int) -> None:
        causes = ", ".join(c.cause for c in calls)
        text = (
            f"badge {badge.uid} ({badge.person}, {badge.role}) may not act on the {causes} "
            f"call at {station.line}/{station.id}"
        )
        self._raise_alert(
            "badge_denied", f"badge_denied:{badge.uid}:{station.line}/{station.id}", text, at,
            station.line, station.id, one_shot=True, uid=badge.uid, person=badge.person,
        )  # fmt: skip

    def _acknowledge(self, call: Call, at: int, who: str | None) -> None:
        call.acknowledged = max(at, call.opened)
        call.acknowledged_by = who
        self._arm_next_tier(call, call.next_tier)  # "unacknowledged" tiers are done
        self._emit_call(call)
        self._notice("call_acknowledged", call, at)
        self._refresh(self._stations[call.line, call.station], at)

    def _resolve(self, call: Call, at: int, who: str | None, how: str) -> None:
        call.resolved = max(at, call.acknowledged or call.opened, call.stopped or 0)
        call.resolved_by, call.resolution = who, how
        call.stop_due = call.escalate_due = None
        del self._calls[call.id]
        station = self._stations[call.line, call.station]
        del station.calls[call.cause]
        self._emit_call(call)
        self._notice("call_resolved", call, call.resolved)
        self._close_call_alerts(call.id, call.resolved)
        self._refresh(station, call.resolved)

    def _stop_deadline(self, line_id: str, cause: str, opened: int) -> int | None:
        stop = self._cause(cause).stop
        if stop == "never":
            return None
        if isinstance(stop, StopAfter):
            return opened + stop.after_s * 1000
        line = self._line_config[line_id]
        if line.stop.mode == "seconds":
            return opened + line.stop.seconds * 1000
        return self._cycle_end(line_id, opened)

    def _stop_line(self, call: Call, at: int) -> None:
        call.stop_due = None
        call.stopped = at
        self._emit_call(call)
        self._refresh(self._stations[call.line, call.station], at)

    # --- escalation -----------------------------------------------------------------------

    def _arm_next_tier(self, call: Call, start: int) -> None:
        """Point the call at the first tier from `start` on that can still fire for it."""
        for index in range(start, len(self._tiers)):
            tier = self._tiers[index][1]
            if tier.causes is not None and call.cause not in tier.causes:
                continue
            if tier.on == "unacknowledged" and call.acknowledged is not None:
                continue
            call.next_tier = index
            due = self._due(call.opened + tier.after_s * 1000)
            call.escalate_due = self._arm(due, ESCALATE, call.id)
            return
        call.next_tier, call.escalate_due = len(self._tiers), None

    def _escalate(self, call: Call, at: int) -> None:
        number, tier = self._tiers[call.next_tier]
        self._arm_next_tier(call, call.next_tier + 1)
        call.tier = number
        self._emit_call(call)
        state = "open" if tier.on == "unresolved" else "unacknowledged"
        text = (
            f"{call.cause} call at {call.line}/{call.station} "
            f"{state} for {(at - call.opened) // 1000} s"
        )
        self._raise_alert(
            "escalation", f"escalation:{call.id}:{number}", text, at, call.line, call.station,
            call=call, tier=number, to=tier.to,
        )  # fmt: skip

    # --- the console ----------------------------------------------------------------------

    def check(self, op: contract.Operator) -> str | None:
        """Why this console action cannot be taken now, or None when it can."""
        if op.reason is not None and op.reason not in self.config.reason_codes:
            codes = ", ".join(self.config.reason_codes) or "none configured"
            return f"unknown reason code {op.reason!r} (codes: {codes})"
        if op.action in ("card_lost", "card_found"):
            return None if op.card in self._cards else f"no kanban card {op.card}"
        if op.action == "resync":  # the store's business (a board's progress), not the rules'
            known = self.config.station_of_board(op.board or "") is not None
            return None if known else f"no board {op.board!r} in the plant"
        if op.call is None:
            return f"{op.action} needs a call id"
        call = self._calls.get(op.call)
        if op.action == "annotate":
            return None if self._numbered(op.call) else f"no call {op.call}"
        if call is None:
            return f"call {op.call} is not open"
        if op.action == "acknowledge" and call.acknowledged is not None:
            return f"call {op.call} is already acknowledged"
        if op.action == "resolve" and call.cause == "cord":
            return "a cord call is resolved by resetting the cord, not from the console"
        return None

    def open_call(self, call_id: str) -> dict | None:
        """An open call as the views show it, or None."""
        call = self._calls.get(call_id)
        return self._call_view(call) if call else None

    def _on_operator(self, op: contract.Operator, at: int) -> None:
        if self.check(op) is not None:
            return  # refused when it was submitted; a replay refuses it the same way
        if op.action == "card_lost":
            self._card_lost(self._cards[op.card], at)
        elif op.action == "card_found":
            self._seen(self._cards[op.card], at)
        elif op.action == "annotate":
            self._annotate(op, at)
        elif op.action == "acknowledge":
            self._acknowledge(self._calls[op.call], at, op.by)
        elif op.action == "resync":
            pass  # logged for the record: the store took the board's numbering afresh
        else:
            self._resolve(self._calls[op.call], at, op.by, "console")

    def _annotate(self, op: contract.Operator, at: int) -> None:
        call = self._calls.get(op.call)
        if call is not None:
            call.reason, call.comment = op.reason, op.comment
            self._emit_call(call)
        line = op.call[2:].rpartition("-")[0]  # C-L1-000001
        note = Annotation(self.config.site, op.call, line, op.reason, op.comment, op.by, at)
        self._out.append(note)

    # --- effects and views ----------------------------------------------------------------

    def _emit_call(self, call: Call) -> None:
        self._out.append(project(CallRecord, call, site=self.config.site))

    def _notice(self, kind: str, call: Call, at: int) -> None:
        """A call's lifecycle notice, for the destinations `[alerts] notices` names."""
        if not self._notice_webhooks:
            return
        text = f"{call.cause} call {call.id} at {call.line}/{call.station}: {kind[5:]}"
        self._send(kind, text, at, call.line, call.station, call=call)

    def _call_view(self, call: Call) -> dict:
        return {
            "id": call.id,
            "line": call.line,
            "station": call.station,
            "cause": call.cause,
            "state": call_state(call),
            "severity": self._severity(call.cause),
            "opened": call.opened,
            "acknowledged": call.acknowledged,
            "acknowledged_by": call.acknowledged_by,
            "stopped": call.stopped,
            "stop_at": call.stop_due,
            "tier": call.tier,
            "repeats": call.repeats,
            "reason": call.reason,
            "comment": call.comment,
        }  # fmt: skip
