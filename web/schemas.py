"""``/schemas/flow.json``: the flow files' JSON Schema at a stable URL, for editors (see engine.schema)."""

from __future__ import annotations

from functools import lru_cache

from flask import Blueprint, Response

bp = Blueprint("schemas", __name__)


@lru_cache(maxsize=1)
def _flow_schema() -> str:
    from engine.schema import render

    return render()


@bp.get("/schemas/flow.json")
def flow_schema() -> Response:
    return Response(_flow_schema(), mimetype="application/schema+json",
                    headers={"Cache-Control": "public, max-age=3600"})
