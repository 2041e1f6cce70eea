"""OpenAPI 3 description of /api, served at /api/openapi.json; tests/test_api.py checks every route is in it."""

from __future__ import annotations

from typing import Any

from web.context import BULK_CAP, STATUSES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "Error: one line saying what is wrong")
RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "integer"}}
TIME = {"type": "string", "description": "ISO-8601 (naive means UTC), epoch seconds, or an age such as 6h"}
FILTER_PARAMS: list[dict[str, Any]] = [
    {"name": "flow", "in": "query", "schema": {"type": "string"}, "description": "Flow id"},
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
    {"name": "since", "in": "query", "schema": TIME, "description": "Received at or after"},
    {"name": "until", "in": "query", "schema": TIME, "description": "Received before"},
    {"name": "q", "in": "query", "schema": {"type": "string"},
     "description": "Dedupe key, `name:value` of an indexed field, a run id, or text in the event body"},
]
FILTER_BODY = {
    "type": "object",
    "properties": {
        "flow": {"type": "string"}, "status": {"type": "string", "enum": list(STATUSES)}, "since": TIME,
        "until": TIME, "q": {"type": "string"},
        "version": {"type": "string", "enum": ["current", "original"], "default": "current"},
    },
}


def spec() -> dict[str, Any]:
    """The document; a function so the served copy is always fresh and tests can inspect it."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Hookline API",
            "version": "1",
            "description": (
                "Runs and flows of a Hookline instance. With HOOKLINE_ADMIN_PASSWORD set, send "
                "`Authorization: Bearer <HOOKLINE_API_TOKEN>` (or use a logged-in browser session, whose POSTs "
                "need the `X-CSRF-Token` header). Times are UTC ISO-8601. Errors are "
                '`{"ok": false, "error": "...", "status": 400}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/flows": {"get": {
                "summary": "Every flow file, loaded or not, with 24 h stats",
                "operationId": "listFlows",
                "responses": {"200": _json(_ref("FlowList"), "Flows"), "401": ERROR},
            }},
            "/api/flows/{flow_id}": {"get": {
                "summary": "One flow: source lines, problems, recent runs",
                "operationId": "getFlow",
                "parameters": [{"name": "flow_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}, "The flow"), "404": ERROR},
            }},
            "/api/runs": {"get": {
                "summary": "Runs, newest first, keyset-paginated",
                "description": "Follow `next_cursor` for older runs; poll with `after=<max_id>` for newer ones. "
                               "`ids=1,2,3` instead returns just those runs (at most 200).",
                "operationId": "listRuns",
                "parameters": FILTER_PARAMS + [
                    {"name": "cursor", "in": "query", "schema": {"type": "integer"},
                     "description": "Runs older than this id (the previous page's next_cursor)"},
                    {"name": "after", "in": "query", "schema": {"type": "integer"},
                     "description": "Runs newer than this id"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                                                "default": 50}},
                    {"name": "ids", "in": "query", "schema": {"type": "string"},
                     "description": "Comma-separated run ids; other parameters are ignored"},
                ],
                "responses": {"200": _json(_ref("RunPage"), "A page of runs"), "400": ERROR, "401": ERROR},
            }},
            "/api/runs/{run_id}": {"get": {
                "summary": "One run: every step attempt, the inbound request, links",
                "operationId": "getRun",
                "parameters": [RUN_ID],
                "responses": {"200": _json(_ref("RunDetail"), "The run"), "404": ERROR},
            }},
            "/api/runs/{run_id}/replay": {"post": {
                "summary": "Replay: a new run on the same event",
                "operationId": "replayRun",
                "parameters": [RUN_ID],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"version": {"type": "string", "enum": ["current", "original"], "default": "current"}},
                }}}},
                "responses": {"201": _json(_ref("Created"), "The new run"), "400": ERROR, "404": ERROR,
                              "409": _json(_ref("Error"), "The flow is not loaded (replay on the original version)")},
            }},
            "/api/runs/{run_id}/retry": {"post": {
                "summary": "Retry from the failed step: a new run keeping the succeeded steps",
                "operationId": "retryRun",
                "parameters": [RUN_ID],
                "responses": {"201": _json(_ref("Created"), "The new run"), "404": ERROR,
                              "409": _json(_ref("Error"), "The run is not failed")},
            }},
            "/api/runs/{run_id}/dry-run": {"post": {
                "summary": "What the current flow version would send for this run's event; sends nothing",
                "operationId": "dryRunRun",
                "parameters": [RUN_ID],
                "responses": {"200": _json({"type": "object", "properties": {
                    "status": {"type": "string"}, "error": {"type": "string", "nullable": True},
                    "steps": {"type": "array", "items": _ref("Step")}}}, "The simulated steps"),
                    "404": ERROR, "409": ERROR},
            }},
            "/api/runs/replay": {"post": {
                "summary": f"Bulk replay of every run matching a filter (at most {BULK_CAP:,})",
                "description": "At least one filter is required; above the cap nothing is replayed (400).",
                "operationId": "bulkReplay",
                "requestBody": {"required": True, "content": {"application/json": {"schema": FILTER_BODY}}},
                "responses": {"201": _json({"type": "object", "properties": {
                    "count": {"type": "integer"}, "replayed": {"type": "array", "items": {"type": "integer"}},
                    "run_ids": {"type": "array", "items": {"type": "integer"}}}}, "The new runs"),
                    "400": ERROR, "409": ERROR},
            }},
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
            }},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "HOOKLINE_API_TOKEN"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["ok", "error", "status"], "properties": {
                    "ok": {"type": "boolean"}, "error": {"type": "string"}, "status": {"type": "integer"}}},
                "Run": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "flow_id": {"type": "string"}, "flow_version": {"type": "string"},
                    "status": {"type": "string", "enum": list(STATUSES)}, "terminal": {"type": "boolean"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "started_at": {"type": "string", "format": "date-time", "nullable": True},
                    "finished_at": {"type": "string", "format": "date-time", "nullable": True},
                    "duration_ms": {"type": "number", "nullable": True},
                    "dedupe_key": {"type": "string", "nullable": True}, "error": {"type": "string", "nullable": True},
                    "reason": {"type": "string", "nullable": True},
                    "next_attempt_at": {"type": "string", "format": "date-time", "nullable": True},
                    "parent_run_id": {"type": "integer", "nullable": True},
                    "replay_kind": {"type": "string", "nullable": True}, "url": {"type": "string"}}},
                "RunPage": {"type": "object", "properties": {
                    "runs": {"type": "array", "items": _ref("Run")},
                    "next_cursor": {"type": "integer", "nullable": True}, "max_id": {"type": "integer"},
                    "filter": {"type": "object"}}},
                "Step": {"type": "object", "properties": {
                    "path": {"type": "string"}, "step_id": {"type": "string"}, "status": {"type": "string"}, "attempt": {"type": "integer"},
                    "duration_ms": {"type": "number", "nullable": True}, "input": {}, "output": {},
                    "request": {"type": "object", "nullable": True}, "response": {"type": "object", "nullable": True},
                    "error": {"type": "object", "nullable": True, "properties": {
                        "type": {"type": "string"}, "message": {"type": "string"}}}}},
                "RunDetail": {"type": "object", "properties": {
                    "run": _ref("Run"), "steps": {"type": "array", "items": _ref("Step")},
                    "event": {"type": "object", "description": "The inbound request: method, query, headers, body"},
                    "parent": {"type": "object", "nullable": True},
                    "children": {"type": "array", "items": _ref("Run")}, "actions": {"type": "object"}}},
                "Created": {"type": "object", "properties": {
                    "ok": {"type": "boolean"}, "run_id": {"type": "integer"}, "parent_run_id": {"type": "integer"},
                    "url": {"type": "string"}}},
                "FlowList": {"type": "object", "properties": {"flows": {"type": "array", "items": {"type": "object"}}}},
            },
        },
    }
