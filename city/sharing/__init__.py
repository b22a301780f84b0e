"""Who may receive what: subscriptions, sharing policies, grants, delegation, break-glass.

One module per idea: `subscriptions` (what a department asks for, compiled and indexed by
type), `policies` (the ``sharing:`` config section and the compiled PolicySet), `grants`
(time-bound grants, delegation chains, break-glass), `authorizer` (Authorizer.decide ->
Decision, and `view`, what the recipient gets), `explain` (the slow path behind `cityrelay
policy explain`), and `strict` (the strict pydantic base of the config models). Pure core: it
may import the filter dialect (`city.filters`), event type patterns (`city.patterns`), the
derived-event rule model (`city.rules`) and `city.errors`, and nothing from queues/, jobs/ or
workers/. Callers import from here (`from city.sharing import Authorizer`); the modules inside
import each other directly.
"""

from city.sharing.authorizer import Authorizer, Decision, view
from city.sharing.explain import Explanation, explain
from city.sharing.grants import (
    Grant,
    GrantError,
    GrantSet,
    check_new_grant,
    descendants,
    new_grant_id,
)
from city.sharing.policies import (
    BreakGlassConfig,
    PolicyRule,
    PolicySet,
    SharingConfig,
    parse_sharing,
)
from city.sharing.subscriptions import (
    AreaRef,
    CompiledSubscription,
    SubscriptionIndex,
    SubscriptionSpec,
    ZoneKey,
    compile_subscription,
    compile_subscriptions,
)

__all__ = [
    "AreaRef",
    "Authorizer",
    "BreakGlassConfig",
    "CompiledSubscription",
    "Decision",
    "Explanation",
    "Grant",
    "GrantError",
    "GrantSet",
    "PolicyRule",
    "PolicySet",
    "SharingConfig",
    "SubscriptionIndex",
    "SubscriptionSpec",
    "ZoneKey",
    "check_new_grant",
    "compile_subscription",
    "compile_subscriptions",
    "descendants",
    "explain",
    "new_grant_id",
    "parse_sharing",
    "view",
]
