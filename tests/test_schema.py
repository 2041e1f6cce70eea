"""docs/flow.schema.json: generated from the specs, current, and true to what the loader accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from engine import schema
from tests.support import ROOT

SCHEMA = json.loads(schema.PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
FLOWS = sorted(p for p in (ROOT / "flows").glob("*.yaml") if p.name != "connections.yaml")


def errors(doc: Any) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(doc)]


def test_the_checked_in_schema_is_current_and_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert schema.PATH.read_text(encoding="utf-8") == schema.render(), "stale: run python -m engine.schema"
    assert schema.main(["--check"]) == 0


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_every_example_flow_matches_the_schema(path: Path) -> None:
    assert errors(yaml.safe_load(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("doc", [
    {"steps": [{"id": "a", "transform": {}, "colour": 1}]},  # unknown step key
    {"steps": [{"id": "a", "http": {"url": "https://x.test", "metod": "POST"}}]},  # unknown http key
    {"steps": [{"id": "a", "foreach": "$.items"}]},  # foreach without steps
    {"steps": [{"id": "a", "switch": {"cases": [{"steps": []}]}}]},  # a case without when
    {"steps": [{"id": "a", "transform": {}, "on_error": "ignore"}]},
    {"trigger": {"verify": {"provider": "strpe"}}, "steps": [{"id": "a", "transform": {}}]},
    {"trigger": {"verify": {"provider": "github", "tolerance": "5m"}}, "steps": [{"id": "a", "transform": {}}]},
    {"steps": [{"id": "bad-id", "transform": {}}]},
    {"colour": "blue", "steps": [{"id": "a", "transform": {}}]},
])
def test_what_the_loader_rejects_for_its_shape_the_schema_rejects(doc: dict[str, Any]) -> None:
    assert errors(doc), doc


def test_served_at_a_stable_url(tmp_path: Path) -> None:
    from engine.app.runtime import make_app
    from engine.config import Settings

    app = make_app(Settings(database_url=f"sqlite:///{tmp_path}/s.db", flows_dir=str(tmp_path), sandbox=False))
    response = app.test_client().get("/schemas/flow.json")
    assert response.status_code == 200 and response.mimetype == "application/schema+json"
    assert response.get_json() == SCHEMA
