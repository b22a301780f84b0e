"""Privacy: what the privacy officer declares and the pure rules that follow from it. `config`
holds the pydantic models of the ``privacy:`` section and `parse_privacy`; `transforms` the
keep / drop / redact / mask ops and the generalisation of place (H3) and time (buckets); `keys`
the key ring, the HMAC signer and keyed pseudonyms; `views` the compiled per-recipient view and
its note; `policy` the `PrivacyPolicy` that compiles and picks a view per (type, recipient,
purpose); `precedence` the written-down precedence of transparency and protection. Beside
them, each its own idea imported by module path: `consent` (consent records and receipts),
`pia` (privacy impact assessments) and `opendata` (k-anonymous open data). Modules here are
pure: they may import the standard library, pydantic, h3, numpy, `city.errors`, `city.events`
and `city.sharing` (the sharing view privacy narrows), and each other directly, never this
`__init__`; nothing from queues/, jobs/ or workers/.
"""

from city.privacy.config import (
    DEFAULT_CLASS_TRANSFORMS,
    LOCATION,
    PERSONAL,
    TIME,
    ControllerConfig,
    FieldClass,
    KeysConfig,
    LawfulBasis,
    OpenDataConfig,
    Period,
    PiaSettings,
    PrivacyConfig,
    TypePrivacy,
    ViewRule,
    parse_privacy,
)
from city.privacy.keys import (
    KeyError_,
    KeyRing,
    Signer,
    consent_id,
    normalise_subject,
    period_of,
    pseudonym,
)
from city.privacy.policy import PrivacyPolicy
from city.privacy.precedence import PRECEDENCE, consent_applies, erasure_decision
from city.privacy.transforms import (
    CACHE_MAX,
    REDACTED,
    Op,
    bucket_time,
    cell_centre,
    generalise_location,
    parse_duration,
    parse_transform,
)
from city.privacy.views import CompiledView, Note

__all__ = [
    "CACHE_MAX",
    "DEFAULT_CLASS_TRANSFORMS",
    "LOCATION",
    "PERSONAL",
    "PRECEDENCE",
    "REDACTED",
    "TIME",
    "CompiledView",
    "ControllerConfig",
    "FieldClass",
    "KeyError_",
    "KeyRing",
    "KeysConfig",
    "LawfulBasis",
    "Note",
    "Op",
    "OpenDataConfig",
    "Period",
    "PiaSettings",
    "PrivacyConfig",
    "PrivacyPolicy",
    "Signer",
    "TypePrivacy",
    "ViewRule",
    "bucket_time",
    "cell_centre",
    "consent_applies",
    "consent_id",
    "erasure_decision",
    "generalise_location",
    "normalise_subject",
    "parse_duration",
    "parse_privacy",
    "parse_transform",
    "period_of",
    "pseudonym",
]
