"""Tie-breaks: the one owner of a point on a shared border of an exclusive layer.

The rule is configured per layer (`city.geo.config.TieBreak`); `Jurisdictions` applies it to
every answer and records the zones that tied (`Located.ties`).
"""

from __future__ import annotations

from collections.abc import Sequence

from city.geo.config import TieBreak
from city.geo.layers import Zone


def break_tie(zones: Sequence[Zone], rule: TieBreak) -> Zone:
    """The one owner among several zones of an exclusive layer."""
    if rule.rule == "name":
        return min(zones, key=lambda z: (z.name, z.index))
    if rule.rule == "priority":
        for name in rule.priority:
            for zone in zones:
                if zone.name == name:
                    return zone
    return min(zones, key=lambda z: z.index)
