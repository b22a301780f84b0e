"""What every event of a route batch with the same outcome and priority shares.

`Router.route_batch` gives the events of a batch that reach the same recipients with the same
decisions one shared `Routed`. A `Shape` is built once per such outcome (and priority): the
recipients' keys and explanations (`via`), the audit rows without their event id, the
counters. The route job's per-event work is then the views, the event id in the audit rows and
the fields of the appends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from city.routing import Routed
from city.sharing import Decision
from jobs.context import RouteContext, where_key
from queues.metrics import delivered_key


@dataclass
class Send:
    """One recipient of an outcome: where its view goes and what travels beside it."""

    dept: str
    purpose: str
    decision: Decision
    entitlement: tuple[object, ...]  # recipients with the same entitlement share a view
    key: str  # the inbox, or this shard's outbox for a recipient at home elsewhere
    head: list[str]  # field/value items before the view (the outbox's destination)
    via: str  # the delivery's explanation (`RouteContext.via_json`)
    remote: bool  # at home on another shard (tracked for acknowledgement there)


@dataclass
class Shape:
    """One outcome's recipients, audit rows and counters, for one priority.

    The tuples for the case nothing is withheld (`counts`, `tally`, `received`) are shared by
    the events, not copied (tuples, so no event can change another's); `withholding` builds
    them when the privacy rule withheld some.
    """

    sends: list[Send]
    priority: str
    versions: str  # the jurisdiction versions used ("" when the event had no place)
    row_tails: list[str]  # each decision's audit row as JSON after its event id
    counts: tuple[str, ...]  # stats fields the delivery script adds to (without derived events)
    tally: tuple[str, ...]  # the job's own counters (without derived events)
    received: tuple[str, ...]  # recipients tracked for acknowledgement on this shard
    recipients: str  # the hot tier's ``to``

    @classmethod
    def of(cls, context: RouteContext, outcome: Routed, priority: str) -> Shape:
        where = where_key(outcome)
        lane = "emergency" if priority == "emergency" else "routine"
        placement = context.placement
        sends = []
        for d in outcome.deliveries:
            decision = d.decision
            out = placement.output(d.dept, context.keys.inbox(d.dept), [], lane)
            sends.append(
                Send(
                    dept=d.dept,
                    purpose=d.purpose,
                    decision=decision,
                    entitlement=(
                        decision.fields,
                        decision.redact,
                        d.purpose,
                        decision.break_glass,
                        decision.grant,
                    ),
                    key=out.key,
                    head=_flat(out.fields),
                    via=context.via_json(d, where),
                    remote=placement.remote_home(d.dept) is not None,
                )
            )
        versions = (
            ",".join(f"{k}:{v}" for k, v in sorted(outcome.versions.items()))
            if outcome.where is not None
            else ""
        )
        shape = cls(
            sends=sends,
            priority=priority,
            versions=versions,
            row_tails=[
                # The row after its event id: "[" + the id's JSON + this is the whole row.
                "," + orjson.dumps([*decision.audit_row("", dept, sub_id)[1:], None]).decode()[1:]
                for dept, sub_id, decision in outcome.decisions
            ],
            counts=(),
            tally=(),
            received=(),
            recipients="",
        )
        shape.counts, shape.tally, shape.received, shape.recipients = shape.withholding(
            outcome, frozenset()
        )
        return shape

    def withholding(
        self, outcome: Routed, withheld: frozenset[tuple[str, str]] | set[tuple[str, str]]
    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]:
        """(counts, tally, received, recipients) when the privacy rule withheld `withheld`."""
        counts = ["delivered"]
        tally = ["delivered"]
        if not outcome.deliveries:
            counts.append("unrouted")
            tally.append("unrouted")
        for send in self.sends:
            if (send.dept, send.purpose) in withheld:
                counts.append("withheld")
                tally.append("withheld")
            else:
                counts += [f"delivered:{send.dept}", delivered_key(send.dept, self.priority)]
                tally += [f"delivered:{send.dept}", "deliveries"]
        denied = ["denied"] * sum(1 for _, _, decision in outcome.decisions if not decision.allow)
        counts += denied
        tally += denied
        received = [
            s.dept for s in self.sends if (s.dept, s.purpose) not in withheld and not s.remote
        ]
        recipients = ",".join(s.dept for s in self.sends if (s.dept, s.purpose) not in withheld)
        return tuple(counts), tuple(tally), tuple(received), recipients


def _flat(fields: Sequence[tuple[str, str | bytes]]) -> list[str]:
    return [text if isinstance(text, str) else text.decode() for pair in fields for text in pair]
