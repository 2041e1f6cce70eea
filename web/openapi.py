"""OpenAPI 3 description of /api, served at /api/openapi.json; tests/test_api.py checks every route is in it.

Every response schema lists the fields the API returns and requires them: tests/test_hardening_api.py
validates real responses against it (schemathesis, plus a check that no returned field is undocumented).
"""

from __future__ import annotations

from typing import Any

from web.context import BULK_CAP, STATUSES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def obj(properties: dict[str, Any], optional: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    """An object whose ``properties`` are all returned (required) but for ``optional``."""
    return {"type": "object", "required": [k for k in properties if k not in optional], "properties": properties,
            **extra}


def _n(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
ANY: dict[str, Any] = {}  # recorded JSON of any shape (step input and output)
DATE = {"type": "string", "format": "date-time"}
FLOW_ID = {"type": "string", "minLength": 1}


ERROR = _json(_ref("Error"), "Error: one line saying what is wrong")
RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0,
                                                                       "maximum": 2**63 - 1}}
TIME = {"type": "string", "description": "ISO-8601 (naive means UTC), epoch seconds, or an age such as 6h",
        "pattern": r"^\s*(\d{1,9}(\.\d{1,6})?\s*[smhdwSMHDW]?|(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])"
                   r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?)?)?\s*$"}
FILTER_PARAMS: list[dict[str, Any]] = [
    {"name": "flow", "in": "query", "schema": {"type": "string"}, "description": "Flow id (empty: any flow)"},
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
    {"name": "since", "in": "query", "schema": TIME, "description": "Received at or after"},
    {"name": "until", "in": "query", "schema": TIME, "description": "Received before"},
    {"name": "q", "in": "query", "schema": {"type": "string"},
     "description": "Dedupe key, `name:value` of an indexed field, a run id, or text in the event body"},
]
FILTER_BODY = {
    "type": "object",
    "description": "At least one of flow, status, since, until and q (an empty filter would replay everything).",
    "properties": {
        "flow": {"type": "string"}, "status": {"type": "string", "enum": list(STATUSES)}, "since": TIME,
        "until": TIME, "q": {"type": "string"},
        "version": {"type": "string", "enum": ["current", "original", None], "default": "current", "nullable": True},
    },
    # an empty string is no filter: at least one of them must be given and not empty
    "anyOf": [{"required": [k], "properties": {k: {"minLength": 1}}} for k in ("flow", "status", "since", "until", "q")],
}
FILTER = obj({"flow": _n("string"), "status": _n("string"), "since": _n("string"), "until": _n("string"),
              "q": _n("string"), "query": {"type": "object", "description": "The filter as typed"}})
RUN_PROPS: dict[str, Any] = {
    "id": INT, "flow_id": STR, "flow_version": STR, "status": {"type": "string", "enum": list(STATUSES)},
    "terminal": BOOL, "created_at": DATE, "started_at": _n("string", format="date-time"),
    "finished_at": _n("string", format="date-time"), "duration_ms": _n("number"), "dedupe_key": _n("string"),
    "error": _n("string"), "reason": _n("string", description="Why a run is waiting"),
    "next_attempt_at": _n("string", format="date-time"),
    "current_step": _n("string", description="Path of the step a waiting or running run is at"),
    "deliveries": {"type": "integer", "description": "Copies of the event received (duplicates included)"},
    "parent_run_id": _n("integer"), "replay_kind": _n("string", enum=["replay", "retry", None]), "url": STR,
    "why": _n("object", description="Why a run is not a success: `summary`, the `step` (path, and the items "
                                    "and cases around it), `message`"),
    "resolution": _n("object", description="For a failed run: `state` resolved (a replay or retry succeeded), "
                                           "retried or unresolved; `by` and `url` of that run"),
}
HTTP_RECORD = _n("object", description="A recorded request or response (headers redacted, body capped)")


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
                "parameters": [{"name": "flow_id", "in": "path", "required": True, "schema": FLOW_ID}],
                "responses": {"200": _json(_ref("FlowDetail"), "The flow"), "404": ERROR, "401": ERROR},
            }},
            "/api/runs": {"get": {
                "summary": "Runs, newest first, keyset-paginated",
                "description": "Follow `next_cursor` for older runs; poll with `after=<max_id>` for newer ones. "
                               "`ids=1,2,3` instead returns just those runs (at most 200).",
                "operationId": "listRuns",
                "parameters": FILTER_PARAMS + [
                    {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
                     "description": "Runs older than this id (the previous page's next_cursor)"},
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
                     "description": "Runs newer than this id"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                                                "default": 50}},
                    {"name": "ids", "in": "query", "schema": {"type": "string",
                                                              "pattern": r"^(\d{1,18}(,\d{1,18}){0,199})?$"},
                     "description": "Comma-separated run ids (at most 200); other parameters are ignored. "
                                    "The answer then has `runs` only"},
                ],
                "responses": {"200": _json(_ref("RunPage"), "A page of runs"), "400": ERROR, "401": ERROR},
            }},
            "/api/runs/{run_id}": {"get": {
                "summary": "One run: every step attempt, the inbound request, links",
                "operationId": "getRun",
                "parameters": [RUN_ID],
                "responses": {"200": _json(_ref("RunDetail"), "The run"), "404": ERROR, "401": ERROR},
            }},
            "/api/runs/{run_id}/replay": {"post": {
                "summary": "Replay: a new run on the same event",
                "operationId": "replayRun",
                "parameters": [RUN_ID],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"version": {"type": "string", "enum": ["current", "original"], "default": "current"}},
                }}}},
                "responses": {"201": _json(_ref("Created"), "The new run"), "400": ERROR, "401": ERROR, "404": ERROR,
                              "409": _json(_ref("Error"), "The flow is not loaded (replay on the original version)")},
            }},
            "/api/runs/{run_id}/retry": {"post": {
                "summary": "Retry from the failed step: a new run keeping the succeeded steps",
                "description": "`version` original (the default without a body, as before it existed) or current: "
                               "then only succeeded steps the current version still has unchanged are kept, and a "
                               "succeeded call that changed, moved or was renamed refuses the retry (409) rather "
                               "than send it twice.",
                "operationId": "retryRun",
                "parameters": [RUN_ID],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"version": {"type": "string", "enum": ["current", "original"],
                                               "default": "original"}},
                }}}},
                "responses": {"201": _json(_ref("Created"), "The new run"), "400": ERROR, "401": ERROR, "404": ERROR,
                              "409": _json(_ref("Error"), "The run is not failed, its flow is not loaded, or a "
                                                          "succeeded call changed in the current version")},
            }},
            "/api/runs/{run_id}/dry-run": {"post": {
                "summary": "What the current flow version would send for this run's event; sends nothing",
                "operationId": "dryRunRun",
                "parameters": [RUN_ID],
                "responses": {"200": _json(obj({
                    "run": _ref("Run"), "status": STR, "error": _n("string"),
                    "steps": {"type": "array", "items": _ref("Step")}, "note": STR}), "The simulated steps"),
                    "401": ERROR, "404": ERROR, "409": ERROR},
            }},
            "/api/runs/replay": {"post": {
                "summary": f"Bulk replay of every run matching a filter (at most {BULK_CAP:,})",
                "description": "At least one filter is required; above the cap nothing is replayed (400).",
                "operationId": "bulkReplay",
                "requestBody": {"required": True, "content": {"application/json": {"schema": FILTER_BODY}}},
                "responses": {"201": _json(obj({
                    "ok": BOOL, "count": INT, "replayed": {"type": "array", "items": INT},
                    "run_ids": {"type": "array", "items": INT}, "filter": FILTER, "job": _ref("Job")}),
                    "The new runs"), "400": ERROR, "401": ERROR, "409": ERROR},
            }},
            "/api/runs/retry": {"post": {
                "summary": f"Bulk retry from the failed step of the failed runs matching a filter (at most {BULK_CAP:,})",
                "description": "Only failed runs not yet replayed or retried are retried; on the current version "
                               "(the default) runs whose succeeded calls changed there are skipped too. `skipped` "
                               "says how many of the filter's runs were left out and why.",
                "operationId": "bulkRetry",
                "requestBody": {"required": True, "content": {"application/json": {"schema": FILTER_BODY}}},
                "responses": {"201": _json(obj({
                    "ok": BOOL, "count": INT, "retried": {"type": "array", "items": INT},
                    "run_ids": {"type": "array", "items": INT}, "version": {"type": "string",
                                                                              "enum": ["current", "original"]},
                    "skipped": {"type": "array", "items": obj({"reason": STR, "count": INT,
                                                                "first_ids": {"type": "array", "items": INT}})},
                    "filter": FILTER, "job": _ref("Job")}), "The new runs"),
                    "400": ERROR, "401": ERROR, "409": ERROR},
            }},
            "/api/jobs/{job_id}": {"get": {
                "summary": "A bulk replay or retry: its progress, then the runs it created",
                "operationId": "getJob",
                "parameters": [{"name": "job_id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}],
                "responses": {"200": _json(obj({"job": _ref("Job")}), "The job"), "401": ERROR, "404": ERROR},
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
                "Run": obj(RUN_PROPS),
                "RunPage": obj({
                    "runs": {"type": "array", "items": _ref("Run")},
                    "next_cursor": _n("integer"), "next_url": _n("string"), "max_id": INT,
                    "live": {"type": "boolean", "description": "True on the newest page (poll with after=max_id)"},
                    "limit": INT, "filter": FILTER,
                }, optional=("next_cursor", "next_url", "max_id", "live", "limit", "filter")),
                "Step": obj({
                    "path": {"type": "string", "description": "The step's identity: its id, or its place in a "
                                                              "container (lines[2].decrement)"},
                    "step_id": STR, "status": STR, "attempt": INT, "position": INT,
                    "started_at": _n("string", format="date-time"), "finished_at": _n("string", format="date-time"),
                    "duration_ms": _n("number"), "input": ANY, "output": ANY, "request": HTTP_RECORD,
                    "response": HTTP_RECORD,
                    "error": _n("object", properties={"type": _n("string"), "message": STR}),
                    "retry_at": _n("string", format="date-time"), "idempotency_key": _n("string"),
                    "kept_from_parent": {"type": "boolean", "description": "Copied from the parent by a retry"},
                }),
                "RunDetail": obj({
                    "run": {"allOf": [_ref("Run"), obj({"order_key": _n("string"), "index": {"type": "object"}})]},
                    "flow": obj({"id": STR, "loaded": BOOL, "current_version": _n("string"),
                                 "ran_current_version": BOOL, "url": STR}),
                    "event": obj({"received_at": DATE, "method": STR, "query": STR, "content_type": _n("string"),
                                  "headers": {"type": "array", "items": {"type": "array", "items": STR}},
                                  "size": INT, "body": STR, "body_truncated": BOOL, "body_json": ANY},
                                 description="The inbound request: method, query, headers (redacted), body"),
                    "steps": {"type": "array", "items": _ref("Step")},
                    "tree": {"type": "object", "description": "The steps as the flow nests them (`steps`, "
                                                              "`on_failure`: containers with their children)"},
                    "parent": _n("object", properties={"id": INT, "url": STR}),
                    "children": {"type": "array", "items": _ref("Run")},
                    "actions": obj({k: _n("string") for k in ("replay", "replay_original", "retry", "dry_run",
                                                               "fixture", "api")}),
                    "versions": {"allOf": [_ref("Versions")], "nullable": True,
                                 "description": "The run's flow version beside the current one"},
                }),
                "Created": obj({"ok": BOOL, "run_id": INT, "parent_run_id": INT, "url": STR}),
                "Versions": obj({
                    "original": STR, "current": _n("string", description="Null when the flow is not loaded"),
                    "changed": BOOL,
                    "diff": {"type": "array", "description": "Side-by-side rows: `tag` equal, changed, removed, "
                                                             "added or fold (`lines` unchanged lines left out); "
                                                             "`old` and `new` are [line number, text] or null",
                             "items": {"type": "object"}}}),
                "Job": obj({
                    "id": INT, "kind": {"type": "string", "enum": ["replay", "retry"]},
                    "version": {"type": "string", "enum": ["current", "original"]},
                    "state": {"type": "string", "enum": ["running", "stalled", "done", "failed"]},
                    "total": INT, "done": INT, "percent": INT, "finished": BOOL, "error": _n("string"),
                    "skipped": {"type": "array", "items": obj({"reason": STR, "count": INT})},
                    "run_ids": {"type": "array", "items": INT, "description": "The first 50 runs created"},
                    "first_run_id": _n("integer"), "last_run_id": _n("integer"), "created_at": DATE,
                    "updated_at": DATE, "url": STR, "json_url": STR, "runs_url": STR, "continue_url": _n("string"),
                }),
                "Flow": obj({
                    "id": STR, "path": STR, "url": STR, "runs_url": STR, "trigger_url": STR, "runs_24h": INT,
                    "counts_24h": {"type": "object", "additionalProperties": INT}, "success_rate": _n("number"),
                    "last_failure": {"allOf": [_ref("Run")], "nullable": True},
                    "volume": {"type": "array", "items": INT}, "ok": BOOL, "name": _n("string"),
                    "description": _n("string"), "version": _n("string"),
                    "errors": {"type": "array", "items": {}}, "warnings": {"type": "array", "items": {}},
                    "verify": ANY, "steps": {"type": "array", "items": {"type": "object"}},
                    "unresolved": {"type": "integer", "description": "Failed runs not yet replayed or retried"},
                    "unresolved_capped": {"type": "boolean", "description": "True when `unresolved` stopped counting"},
                    "unresolved_url": STR,
                }, optional=("name", "description", "version", "verify", "steps", "last_failure", "warnings",
                             "unresolved", "unresolved_capped", "unresolved_url")),
                "FlowList": obj({"flows": {"type": "array", "items": _ref("Flow")}, "flows_dir": STR,
                                 "connections": {"type": "array", "items": {"type": "object"}}},
                                optional=("flows_dir", "connections")),
                "FlowDetail": obj({
                    "flow": _ref("Flow"),
                    "source": {"type": "array", "items": obj({"n": INT, "text": STR,
                                                              "errors": {"type": "array", "items": {}}})},
                    "runs": {"type": "array", "items": _ref("Run")},
                    "diagram": {"description": "The flow's steps drawn as a diagram (what the flow page shows)"},
                    "empty_keys": {"type": "array", "description": "Per declared dedupe key and index field, the "
                                   "runs of the last 24 h where it resolved to nothing (a mistyped path) and the first",
                                   "items": obj({"key": STR, "label": STR, "expr": STR, "count": INT, "capped": BOOL,
                                                 "first_run_id": _n("integer"), "first_run_url": _n("string")})},
                }, optional=("diagram", "empty_keys")),
            },
        },
    }
