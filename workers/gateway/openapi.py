"""The OpenAPI 3.1 document served at ``/openapi.json`` (written out: the CloudEvents binding's
three modes and the ``ce-*`` headers are not something a framework can infer)."""

from __future__ import annotations

from typing import Any

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }


_AUTH_ERRORS = {
    "401": _problem("missing, unknown, revoked or expired token"),
    "403": _problem("the token's department is not the one named"),
}
# A city of URL shards: the department is served by another shard's gateway.
_HOMED = {"421": _problem("the department is at home on another shard (`home` names it)")}
_HOMED_ERRORS = {**_AUTH_ERRORS, **_HOMED}
_DEPT = {"name": "dept", "in": "path", "required": True, "schema": {"type": "string"}}
_CONSUMER = {
    "name": "consumer",
    "in": "query",
    "schema": {"type": "string", "default": "http"},
    "description": "consumer of the department's group; pending messages are per consumer",
}
_EVENT = {
    "type": "object",
    "description": "CloudEvents 1.0 with the city extensions priority, location, department",
    "required": ["id", "source", "specversion", "type", "time"],
    "properties": {
        "id": {"type": "string"},
        "source": {"type": "string", "example": "/city/sdot"},
        "specversion": {"const": "1.0"},
        "type": {"type": "string", "example": "traffic.incident"},
        "time": {"type": "string", "format": "date-time"},
        "data": {"type": "object"},
        "priority": {"enum": ["emergency", "high", "routine", "bulk"]},
        "department": {"type": "string"},
        "location": {
            "description": "{lat, lon}, a GeoJSON geometry, or either as a JSON string",
            "oneOf": [{"type": "object"}, {"type": "string"}],
        },
    },
}


def document(version: str = "0.1.0") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cityrelay gateway",
            "version": version,
            "description": "Publish CloudEvents and CAP alerts, read and acknowledge inboxes. "
            "See docs/integration.md.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
                "Event": _EVENT,
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "accepted": {"type": "array", "items": {"type": "string"}},
                        "refused": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "index": {"type": "integer"},
                                    "id": {"type": ["string", "null"]},
                                    "reason": {"type": "string"},
                                    "detail": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"security": [], "responses": {"200": {"description": "up"}}}},
            "/readyz": {
                "get": {
                    "security": [],
                    "responses": {
                        "200": {"description": "Redis reachable, config loaded"},
                        "503": _problem("not ready"),
                    },
                }
            },
            "/v1/events": {
                "post": {
                    "summary": "Publish events (CloudEvents HTTP binding: structured, binary, "
                    "batch)",
                    "parameters": [
                        {"name": "min_replicas", "in": "query", "schema": {"type": "integer"}},
                        {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}},
                        {
                            "name": "ce-specversion",
                            "in": "header",
                            "schema": {"type": "string"},
                            "description": "binary mode (with ce-id, ce-source, ce-type, ...)",
                        },
                    ],
                    "requestBody": {
                        "content": {
                            "application/cloudevents+json": {"schema": _EVENT},
                            "application/cloudevents-batch+json": {
                                "schema": {"type": "array", "items": _EVENT}
                            },
                            "application/json": {
                                "schema": {"type": "object"},
                                "description": "binary mode: the data",
                            },
                        }
                    },
                    "responses": {
                        "202": {
                            "description": "accepted (in Redis); refused events listed",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Accepted"}
                                }
                            },
                        },
                        "400": _problem("malformed request"),
                        **_HOMED_ERRORS,
                        "409": _problem("same Idempotency-Key in flight"),
                        "413": _problem("body or batch too large"),
                        "415": _problem("unsupported content type"),
                        "422": _problem("every event refused (dead-lettered)"),
                        "429": _problem("backpressure: retry after Retry-After"),
                        "503": _problem("Redis unavailable or replicas missing"),
                    },
                }
            },
            "/v1/cap": {
                "post": {
                    "summary": "Publish a CAP 1.2 alert as received",
                    "requestBody": {"content": {"application/cap+xml": {}, "application/xml": {}}},
                    "responses": {
                        "202": {"description": "published; the event ids it makes"},
                        **_HOMED_ERRORS,
                        "413": _problem("too large"),
                        "422": _problem("not a valid CAP alert (dead-lettered)"),
                        "429": _problem("backpressure"),
                    },
                }
            },
            "/v1/inbox/{dept}": {
                "get": {
                    "summary": "A page: pending messages first, then new ones",
                    "parameters": [
                        _DEPT,
                        _CONSUMER,
                        {"name": "count", "in": "query", "schema": {"type": "integer"}},
                        {"name": "wait_ms", "in": "query", "schema": {"type": "integer"}},
                    ],
                    "responses": {"200": {"description": "messages"}, **_HOMED_ERRORS},
                }
            },
            "/v1/inbox/{dept}/ack": {
                "post": {
                    "summary": "Acknowledge entry ids (and emergencies by event id)",
                    "parameters": [_DEPT],
                    "requestBody": {"content": {"application/json": {}}},
                    "responses": {"200": {"description": "acknowledged"}, **_HOMED_ERRORS},
                }
            },
            "/v1/inbox/{dept}/stream": {
                "get": {
                    "summary": "Server-Sent Events; resumable with Last-Event-ID",
                    "parameters": [_DEPT, _CONSUMER],
                    "responses": {
                        "200": {"description": "text/event-stream"},
                        **_HOMED_ERRORS,
                        "503": _problem("too many streams"),
                    },
                }
            },
            "/v1/locate": {
                "get": {
                    "summary": "Jurisdictions and departments of a point",
                    "parameters": [
                        {"name": "lat", "in": "query", "required": True},
                        {"name": "lon", "in": "query", "required": True},
                        {"name": "at", "in": "query"},
                    ],
                    "responses": {"200": {"description": "zones and departments"}},
                }
            },
        },
    }
