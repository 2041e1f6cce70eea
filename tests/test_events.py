"""engine.events: bodies become events the same way at ingress and in the worker, per the flow's preset."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from engine.events import BadBody, make_event, parse_body
from engine.model import EventRecord, Trigger
from engine.presets import form_rule, parse_verify

FORM = "application/x-www-form-urlencoded"
DELIVERY = {"action": "opened", "repository": {"full_name": "octo/hello", "id": 7}}
GITHUB_FORM = urlencode({"payload": json.dumps(DELIVERY)}).encode()


def trigger(raw: dict[str, str]) -> Trigger:
    config, problems = parse_verify(raw)
    assert config is not None, problems
    return Trigger(verify=config)


GITHUB = trigger({"provider": "github", "secret": "${S}"})
SLACK = trigger({"provider": "slack", "secret": "${S}"})


def record(body: bytes, content_type: str = FORM) -> EventRecord:
    return EventRecord(id=1, flow_id="f", received_at=0.0, method="POST", query="", headers=[], body=body,
                       content_type=content_type)


def test_github_form_delivery_is_the_decoded_payload() -> None:
    assert make_event(record(GITHUB_FORM), GITHUB).body == DELIVERY
    assert parse_body(GITHUB_FORM, FORM, form_rule=form_rule(GITHUB.verify)) == DELIVERY
    assert make_event(record(json.dumps(DELIVERY).encode(), "application/json"), GITHUB).body == DELIVERY


def test_without_the_github_preset_a_form_keeps_its_fields() -> None:
    assert make_event(record(GITHUB_FORM)).body == {"payload": DELIVERY}
    assert make_event(record(GITHUB_FORM), SLACK).body == {"payload": DELIVERY}  # Slack interactivity, as before
    assert make_event(record(b"command=%2Fdeploy&text=prod"), SLACK).body == {"command": "/deploy", "text": "prod"}


def test_github_form_without_a_json_payload_is_a_bad_body() -> None:
    rule = form_rule(GITHUB.verify)
    for body in (b"payload=not-json", b"other=1", b"payload=%7Bbroken"):
        with pytest.raises(BadBody, match="no JSON payload"):
            parse_body(body, FORM, form_rule=rule)
        assert make_event(record(body), GITHUB).body is None


@pytest.mark.parametrize("rule", [None, form_rule(GITHUB.verify)])
def test_deeply_nested_form_payload_is_a_bad_body_not_a_crash(rule: object) -> None:
    body = urlencode({"payload": "[" * 10_000 + "]" * 10_000}).encode()
    with pytest.raises(BadBody, match="nested too deeply"):
        parse_body(body, FORM, form_rule=rule)  # type: ignore[arg-type]
    assert make_event(record(body), GITHUB).body is None
