"""The gateway's limits and options, from `cityrelay gateway` flags or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "CITYRELAY_GATEWAY_"


@dataclass(frozen=True)
class GatewaySettings:
    max_body_bytes: int = 4 * 1024 * 1024  # a whole request body (a batch); 413 above it
    max_cap_bytes: int = 1024 * 1024  # a CAP document (ingest's own limit is city.cap's)
    batch_max_events: int = 1000  # events in one application/cloudevents-batch+json request
    body_timeout_s: float = 10.0  # to receive a whole body once the headers are in (408)
    header_timeout_s: float = 10.0  # to receive a request's headers (slowloris guard, 408)
    max_header_bytes: int = 64 * 1024  # request line + headers (431 above)
    token_cache_s: float = 1.0  # a revoked token is refused within this time on every gateway
    idempotency_ttl_s: int = 24 * 3600  # how long an Idempotency-Key's answer is kept
    inbox_page_max: int = 1000  # messages per GET /v1/inbox page
    inbox_block_max_ms: int = 30_000  # longest long-poll wait
    max_streams: int = 200  # concurrent SSE streams per process (503 beyond)
    stream_keepalive_s: float = 15.0  # SSE comment line when nothing else was sent
    max_min_replicas: int = 5  # ?min_replicas= ceiling
    replica_timeout_ms: int = 1000  # WAIT timeout for ?min_replicas=
    publish_threads: int = 32  # routine publishing threads
    emergency_threads: int = 8  # threads reserved for requests carrying an emergency

    @classmethod
    def from_env(cls, **overrides: Any) -> GatewaySettings:
        """Defaults, then ``CITYRELAY_GATEWAY_<NAME>`` variables, then `overrides` (not None)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = float(raw) if f.type == "float" else int(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` return these settings (uvicorn workers)."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}
