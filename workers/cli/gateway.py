"""`cityrelay gateway` (the HTTP gateway, workers/gateway/) and `cityrelay token ...`.

- ``gateway [--host 127.0.0.1] [--port 8080] [--workers N]``: uvicorn serving
  `workers.gateway.app.create_app` (with httptools and uvloop when installed). Slow or idle
  clients are bounded by uvicorn's keep-alive timeout and the gateway's body timeout; the
  number of connections by ``--limit-concurrency`` (503 beyond). Uvicorn's access log is off:
  nothing is logged per request (and the Authorization header never is).
- ``token create --dept D [--name N] [--expires 30d|12h|ISO time]``: prints the record, then the
  token alone on the last line, once (only its hash is stored).
- ``token list [--dept D] [--json]``, ``token revoke ID``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from queues.tokens import TokenError, TokenRecord, TokenStore
from workers import logs
from workers.gateway.settings import GatewaySettings
from workers.runtime import Runtime

DURATION = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(subparsers: Any) -> None:
    gw = subparsers.add_parser("gateway", help="the HTTP gateway (CloudEvents, CAP, inboxes)")
    gw.add_argument("--host", default="127.0.0.1")
    gw.add_argument("--port", type=int, default=8080)
    workers = int(os.environ.get("CITYRELAY_GATEWAY_WORKERS", "2"))
    gw.add_argument("--workers", type=int, default=workers,
                    help="uvicorn worker processes ($CITYRELAY_GATEWAY_WORKERS, 2)")  # fmt: skip
    gw.add_argument("--limit-concurrency", type=int, default=2048,
                    help="connections + tasks before uvicorn answers 503")  # fmt: skip
    gw.add_argument("--keep-alive-s", type=int, default=5, help="idle keep-alive timeout")
    gw.add_argument("--header-timeout-s", type=float,
                    help="deadline for a request's headers (default 10; slowloris)")  # fmt: skip
    gw.add_argument("--max-body-bytes", type=int)
    gw.add_argument("--batch-max-events", type=int)
    gw.add_argument("--body-timeout-s", type=float)
    gw.set_defaults(func=cmd_gateway)

    tok = subparsers.add_parser("token", help="API tokens of the HTTP gateway")
    actions = tok.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="a new token (printed once, last line)")
    create.add_argument("--dept", required=True)
    create.add_argument("--name", default="", help="who or what uses it")
    create.add_argument("--expires", help="30d, 12h, 90m... or an ISO 8601 time (default never)")
    create.set_defaults(func=cmd_token_create)
    lst = actions.add_parser("list", help="tokens with their state (never the tokens)")
    lst.add_argument("--dept")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_token_list)
    rev = actions.add_parser("revoke", help="revoke a token by id (from `token list`)")
    rev.add_argument("id")
    rev.set_defaults(func=cmd_token_revoke)


def cmd_gateway(args: argparse.Namespace, runtime: Runtime) -> int:
    import uvicorn

    runtime.city()  # fail now, with the message, if there is no config
    settings = GatewaySettings.from_env(
        max_body_bytes=args.max_body_bytes,
        batch_max_events=args.batch_max_events,
        body_timeout_s=args.body_timeout_s,
        header_timeout_s=args.header_timeout_s,
    )
    # The app is built by a factory in each worker process: hand it everything by environment.
    os.environ.update(settings.to_env())
    os.environ["REDIS_URL"] = runtime.redis_url
    os.environ["CITYRELAY_PREFIX"] = runtime.prefix
    os.environ["CITYRELAY_CONFIG"] = str(runtime.config_path)
    root = logging.getLogger()  # the worker processes log like this one
    os.environ["CITYRELAY_LOG_LEVEL"] = logging.getLevelName(root.level)
    for handler in root.handlers:
        if handler.get_name() == "cityrelay":
            json_lines = isinstance(handler.formatter, logs.JsonFormatter)
            os.environ["CITYRELAY_LOG_FORMAT"] = "json" if json_lines else "text"
    try:  # httptools (uvicorn[standard]) with header deadline and size guards
        from workers.gateway.protocol import GuardedHttpToolsProtocol

        http: Any = GuardedHttpToolsProtocol
        GuardedHttpToolsProtocol.header_timeout_s = settings.header_timeout_s
        GuardedHttpToolsProtocol.max_header_bytes = settings.max_header_bytes
    except ImportError:  # pragma: no cover - plain uvicorn: its h11 protocol
        http = "auto"
    uvicorn.run(
        "workers.gateway.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,  # keep cityrelay's handler (workers/logs.py)
        timeout_keep_alive=args.keep_alive_s,
        limit_concurrency=args.limit_concurrency,
        timeout_graceful_shutdown=10,
        server_header=False,
        http=http,
    )
    return 0


def parse_expiry(text: str | None, now: float | None = None) -> float | None:
    if text is None:
        return None
    now = time.time() if now is None else now
    match = DURATION.match(text.strip())
    if match:
        return now + int(match.group(1)) * UNITS[match.group(2)]
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--expires {text!r}: use 30d, 12h, 90m or an ISO 8601 time") from None
    if value.tzinfo is None:
        raise ValueError(f"--expires {text!r}: add a time zone (Z or +hh:mm)")
    return value.timestamp()


def _when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _doc(record: TokenRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "dept": record.dept,
        "name": record.name,
        "state": record.state(),
        "created": _when(record.created),
        "expires": _when(record.expires),
        "revoked": _when(record.revoked),
    }


def cmd_token_create(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        expires = parse_expiry(args.expires)
        if runtime.config_path is not None:
            config, _ = runtime.city()
            if args.dept not in config.department_ids:
                raise TokenError(f"no department {args.dept!r} in the city config")
        token, record = TokenStore(runtime.redis(), runtime.keys).create(
            args.dept, args.name, expires
        )
    except (TokenError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = _doc(record)
    print(f"token {doc['id']} for {doc['dept']}" + (f" ({doc['name']})" if doc["name"] else "")
          + (f", expires {doc['expires']}" if doc["expires"] else "")
          + "; shown once, store it now:")  # fmt: skip
    print(token)
    return 0


def cmd_token_list(args: argparse.Namespace, runtime: Runtime) -> int:
    docs = [_doc(r) for r in TokenStore(runtime.redis(), runtime.keys).list(args.dept)]
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    print(f"{'id':12s}  {'department':20s} {'state':8s} {'created':25s} {'expires':25s} name")
    for d in docs:
        print(f"{d['id']:12s}  {d['dept']:20s} {d['state']:8s} {d['created']:25s} "
              f"{d['expires'] or '-':25s} {d['name']}")  # fmt: skip
    return 0


def cmd_token_revoke(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        record = TokenStore(runtime.redis(), runtime.keys).revoke(args.id)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"token {record.id} of {record.dept} revoked at {_when(record.revoked)}")
    return 0
