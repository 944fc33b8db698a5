"""Kanban: cards, orders and how many cards a loop needs.

A card is `in_use` until it is posted, then `ordered` (the replenishment trigger goes out with
the post: there is no approval step) until a receive scan returns it to `in_use`, recording the
lead time. A card posted again while ordered is the same order. A known card posted at any post
reader is accepted (the order is booked to where it was posted). Unknown tags on post or
receive readers, and unknown badges, raise unknown_tag. A known badge's tap is a response to
the station's calls (`calls`). An order not received by posted + lead time x overdue_factor
raises overdue_card, open until received; a card not scanned for lost_after_s (or marked lost
in the console) raises lost_card, open until it is seen again; cards count as seen when the
core's clock starts.

Sizing (docs/rules.md has a worked example): N = ceil(D x L x (1 + safety)) + 1 cards, with D
the demand in bins per day, L the mean measured lead time in days (the configured one until an
order has been received) and the +1 for the bin in use. D is the loop's planned demand when the
plant file says `demand = "planned"`; else measured: the posts in the demand window divided by
the time in the window when a card was left to post. While every card is ordered nobody can
post, so that time would hide demand; the correction is capped at 10x the window.

State used: `_cards`, `_orders`, `_loops`, `_stations`, `_counters` (orders per line), timers.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort

from andon import contract
from andon.config import KanbanLoop
from andon.core.effects import OrderRecord, Replenish, project
from andon.core.state import Card, LoopStats, Order, Station
from andon.core.timers import LOST, OVERDUE

DAY_MS = 86_400_000
MAX_STARVED_CORRECTION = 10  # measured demand is at most 10x posts per window


class KanbanRules:
    def _on_scan(self, station: Station, event: contract.Scan, at: int) -> None:
        if event.role == "badge":
            badge = self.config.badge(event.uid)
            if badge is not None:
                self._respond(station, at, badge)
                return
        card = self._cards.get(event.uid) if event.role != "badge" else None
        if card is None:
            where = f"{station.line}/{station.id}"
            text = f"unknown tag {event.uid} on the {event.role} reader at {where}"
            self._raise_alert(
                "unknown_tag", f"unknown_tag:{where}/{event.uid}", text, at, station.line,
                station.id, one_shot=True, uid=event.uid,
            )  # fmt: skip
            return
        self._seen(card, at)
        if event.role == "post":
            self._post(card, station, at)
        else:
            self._receive(card, at)

    def _seen(self, card: Card, at: int) -> None:
        card.last_seen = max(card.last_seen, at)
        if card.lost:
            card.lost = False
            self._clear_alert(f"lost:{card.uid}", at)
        due = self._due(card.last_seen + self.config.kanban_policy.lost_after_s * 1000)
        if card.lost_due is None:
            self._arm(due, LOST, card.uid)
        card.lost_due = max(due, card.lost_due or 0)

    def _post(self, card: Card, station: Station, at: int) -> None:
        if card.order is not None:
            return  # posted again before it was received: the same order
        loop = self.config.loop_of_card(card.uid)
        policy = self.config.kanban_policy
        order = Order(
            self._next_id("K", station.line),
            loop.part,
            loop.bin_qty,
            loop.supplier,
            card.uid,
            station.line,
            station.id,
            posted=at,
            due=at + loop.lead_time_s * 1000,
        )
        overdue = at + math.ceil(loop.lead_time_s * 1000 * policy.overdue_factor)
        order.overdue_due = self._arm(self._due(overdue), OVERDUE, order.id)
        self._orders[order.id] = order
        card.order = order.id
        stats = self._loops[loop.part]
        insort(stats.posts, at)
        if all(self._cards[uid].order is not None for uid in loop.cards):
            stats.starved.append([at, None])  # no card left to post
        self._forget_before_window(stats)
        station.orders += 1
        self._out.append(project(Replenish, order, site=self.config.site, order=order.id))
        self._emit_order(order)
        self._refresh(station, at)

    def _receive(self, card: Card, at: int) -> None:
        if card.order is None:
            return  # a card in use, scanned at receiving: only seen
        order = self._orders.pop(card.order)
        card.order = None
        order.received = max(at, order.posted)
        order.overdue_due = None
        lead = order.received - order.posted
        stats = self._loops[order.part]
        if stats.starved and stats.starved[-1][1] is None:
            stats.starved[-1][1] = max(order.received, stats.starved[-1][0])
        stats.received += 1
        stats.lead_sum_ms += lead
        stats.lead_min_ms = lead if stats.lead_min_ms is None else min(stats.lead_min_ms, lead)
        stats.lead_max_ms = lead if stats.lead_max_ms is None else max(stats.lead_max_ms, lead)
        self._clear_alert(f"overdue:{order.id}", at)
        self._emit_order(order)
        poster = self._stations[order.line, order.station]
        poster.orders -= 1
        self._refresh(poster, at)

    def _order_overdue(self, order: Order, at: int) -> None:
        order.overdue_due = None
        order.overdue = True
        text = f"{order.part} order {order.id} (card {order.card}) is overdue since {order.due}"
        self._raise_alert(
            "overdue_card", f"overdue:{order.id}", text, at, order.line, order.station,
            card=order.card,
        )  # fmt: skip
        self._emit_order(order)

    def _card_lost(self, card: Card, at: int) -> None:
        card.lost_due = None
        card.lost = True
        text = f"{card.part} card {card.uid} not seen since {card.last_seen}"
        post = self.config.loop_of_card(card.uid).post  # the loop's station: where to look
        self._raise_alert(
            "lost_card", f"lost:{card.uid}", text, at, post.line, post.station, card=card.uid,
            part=card.part,
        )  # fmt: skip

    def _emit_order(self, order: Order) -> None:
        self._out.append(project(OrderRecord, order, site=self.config.site))

    # --- sizing ---------------------------------------------------------------------------

    def _window_ms(self) -> int:
        """The demand window, or the time since the clock started if that is shorter."""
        return min(self.config.kanban_policy.demand_window_s * 1000, self.now - self.started)

    def _forget_before_window(self, stats: LoopStats) -> None:
        """Drop posts and starved spells that ended before the demand window (its start
        included: a post exactly at the window's start counts)."""
        start = self.now - self.config.kanban_policy.demand_window_s * 1000
        del stats.posts[: bisect_left(stats.posts, start)]
        stats.starved[:] = [s for s in stats.starved if s[1] is None or s[1] > start]

    def _bins_per_day(self, loop: KanbanLoop, stats: LoopStats) -> float:
        """The loop's demand in bins per day: planned, or measured (module docstring)."""
        if loop.demand == "planned":
            return loop.planned_bins_per_day
        if self.now is None or self.now <= self.started:
            return 0.0
        window = self._window_ms()
        start = self.now - window
        posts = len(stats.posts) - bisect_left(stats.posts, start)
        starved = sum(
            min(end if end is not None else self.now, self.now) - max(begin, start)
            for begin, end in stats.starved
            if (end is None or end > start) and begin < self.now
        )
        open_ms = max(window - starved, window / MAX_STARVED_CORRECTION)
        return posts * DAY_MS / open_ms

    def _loop_view(self, part: str) -> dict:
        loop = next(k for k in self.config.kanban if k.part == part)
        stats = self._loops[part]
        cards = [self._cards[uid] for uid in loop.cards]
        ordered = [c for c in cards if c.order is not None]
        overdue = sum(self._orders[c.order].overdue for c in ordered)
        lead_ms = stats.lead_sum_ms // stats.received if stats.received else loop.lead_time_s * 1000
        demand = self._bins_per_day(loop, stats)
        return {
            "part": part,
            "description": loop.description,
            "cards": {
                "total": len(cards),
                "in_use": len(cards) - len(ordered),
                "ordered": len(ordered),
                "overdue": overdue,
                "lost": sum(c.lost for c in cards),
            },
            "demand": loop.demand,
            "orders_per_day": demand,
            "lead_time_ms": {
                "configured": loop.lead_time_s * 1000,
                "received": stats.received,
                "mean": lead_ms if stats.received else None,
                "min": stats.lead_min_ms,
                "max": stats.lead_max_ms,
            },
            "recommended_cards": recommended_cards(
                demand, lead_ms, self.config.kanban_policy.safety_factor
            ),
        }


def recommended_cards(bins_per_day: float, lead_ms: int, safety_factor: float) -> int:
    """N = ceil(D x L x (1 + safety)) + 1: the bins that cover the lead time, with safety
    stock, plus the bin in use (D in bins per day, L in days)."""
    bins = bins_per_day * lead_ms / DAY_MS * (1 + safety_factor)
    return math.ceil(round(bins, 9)) + 1  # 3.0000000000000004 bins are 3
