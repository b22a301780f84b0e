"""The Redis side: where events wait and travel, and every key they use.

Key names (`keys`), connections (`connect`), the ingest streams (`streams/`: producer, consumer
group, dead letters), the RQ queues (`priority`), delivery and inboxes (`inbox`, `message`,
`acks`), the hot tier (`hot`), counters and what operators read (`metrics`, `snapshot`,
`observe`), the audit stream, grants, consent, PIAs, jurisdiction versions, ACLs, limits, the
producer's spool and partitioned cities (`partition`). May import the core (`city`) and Redis;
never jobs or workers.
"""
