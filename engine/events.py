"""Turning raw request bytes into the event a flow sees; shared by ingress and workers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from engine import presets
from engine.errors import BadBody
from engine.model import Event, EventRecord, Headers, Trigger
from engine.presets import FormRule

__all__ = ["BadBody", "make_event", "parse_body", "redact_pairs"]  # BadBody lives in engine.errors; kept importable here


def parse_body(body: bytes, content_type: str, *, form_rule: FormRule | None = None) -> Any:
    """JSON for ``*/json`` and ``*+json``, a mapping for form posts, text otherwise (None when empty).

    Bodies without a declared type that look like JSON are parsed as JSON, since some providers omit it.
    A form's ``payload`` field holding JSON is decoded (Slack interactivity, GitHub form deliveries);
    ``form_rule`` (the flow's verification preset's) may then turn the form into the event, as GitHub's
    does with ``payload``. Form bodies of other providers stay a mapping of their fields.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return None
    if ctype.endswith("/json") or ctype.endswith("+json"):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadBody(f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadBody("body is not valid JSON: nested too deeply") from None
    if ctype == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody("form body is not UTF-8") from None
        form: dict[str, Any] = dict(parse_qsl(text, keep_blank_values=True))
        if "payload" in form and form["payload"][:1] in ("{", "["):  # Slack interactivity, GitHub form hooks
            try:
                form["payload"] = json.loads(form["payload"])
            except ValueError:
                pass
            except RecursionError:
                raise BadBody("form payload is not valid JSON: nested too deeply") from None
        if form_rule is None:
            return form
        try:
            return form_rule(form)
        except ValueError as exc:
            raise BadBody(str(exc)) from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    stripped = text.lstrip()
    if not ctype and stripped[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    return text


def make_event(record: EventRecord, trigger: Trigger | None = None) -> Event:
    """The Event a worker runs, rebuilt from what ingress stored; ``trigger`` is the flow's, for its body rules."""
    try:
        rule = presets.form_rule(trigger.verify if trigger else None)
        body = parse_body(record.body, record.content_type, form_rule=rule)
    except BadBody:
        body = None
    return Event(
        body=body,
        headers=Headers(record.headers),
        query=dict(parse_qsl(record.query, keep_blank_values=True)),
        raw=record.body,
        method=record.method,
        content_type=record.content_type,
    )


def redact_pairs(pairs: Sequence[tuple[str, str]], names: Sequence[str]) -> list[tuple[str, str]]:
    lowered = {n.lower() for n in names}
    return [(k, "[redacted]" if k.lower() in lowered else v) for k, v in pairs]
