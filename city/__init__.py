"""The core: what an event is and what the city's rules say about it, in pure Python.

Events and their validation (`events`, `schemas`, `catalog`), the city config (`config`,
`errors`), geography (`geo/`), who may receive what (`sharing/`, with `filters` and `patterns`
for subscriptions and rules), privacy views, consent, PIAs and open data (`privacy/`), routing
(`routing`, `rules`), CAP alerts (`cap/`), escalation chains (`escalation`), the retention
schedule (`retention/`) and the audit chain's records (`audit`). Nothing here does I/O beyond
reading config and layer files: no Redis, RQ or S3, and no import from queues, jobs or workers.
"""
