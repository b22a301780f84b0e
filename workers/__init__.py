"""The processes you run (Procfile targets) and the `cityrelay` CLI that starts them.

The processes each have a module: `ingest` (stream consumer), `worker` (RQ workers per role),
`relay` (outboxes between shards), `demo` (the demo city) with `standins` (embedded Redis and
S3); `runtime` and `logs` are the settings and log lines they share. The commands you type live
in `cli/`, one module per command group. May import everything below: city, queues, jobs.
"""
