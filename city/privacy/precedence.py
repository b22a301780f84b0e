"""The precedence between transparency and protection, written down once.

`PRECEDENCE` states the rules; `consent_applies`, `erasure_decision` (here) and the open-data
release (`city.privacy.opendata`) apply them.
"""

from __future__ import annotations

from city.privacy.config import TypePrivacy

PRECEDENCE: tuple[str, ...] = (
    "1. A legal obligation (or legal retention) beats erasure and consent withdrawal: such "
    "records stay and keep flowing to the recipients the law names.",
    "2. A sharing forbid beats a privacy 'keep': privacy only removes or coarsens.",
    "3. Consent gates only processing whose lawful basis is consent; break-glass (vital "
    "interests) is not gated by consent but still gets the recipient's transforms.",
    "4. The public sees personal data only as aggregates (k-suppressed, optionally noised) "
    "or as k-anonymous records without direct identifiers or sensitive fields.",
    "5. Audit and consent records hold pseudonyms and key ids, never raw identifiers.",
)


def consent_applies(basis: str, break_glass: bool = False) -> bool:
    """Consent gates only consent-based processing; break-glass is vital interests."""
    return basis == "consent" and not break_glass


def erasure_decision(tp: TypePrivacy | None, legal_hold: bool = False) -> tuple[str, str]:
    """Whether a citizen's erasure request may delete this type's records (precedence 1)."""
    if legal_hold:
        return "retain", "a legal hold applies: legal retention beats erasure"
    if tp is not None and tp.lawful_basis == "legal_obligation":
        return "retain", "processed under a legal obligation: legal retention beats erasure"
    return "erase", "no legal ground to retain: erase on request"
