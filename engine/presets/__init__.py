"""Webhook verification presets: one file per provider, one registry, as the step types in engine.steps.

Each ``engine/presets/<name>.py`` declares one :class:`~engine.presets.base.Preset` and registers it; every
module of the package is imported at start-up, so a new provider needs no edit elsewhere. The
loader validates ``trigger.verify`` from the presets' fields (:func:`parse_verify`), the ingress calls
:func:`verify_request` with the request as received, redacts :func:`secret_fields` before storing, and
parses form bodies with :func:`form_rule`; docs/flows.md's preset reference and the round-trip tests are
generated from :data:`REGISTRY`. Adding a provider is one new file here plus its tests, or, outside this
repository, a package whose ``hookline.presets`` entry point is a module calling :func:`register`
(engine.plugins; loaded after the built-ins).

Pure: no I/O, no clock and no environment of its own. Every secret may be a ``${VAR}`` reference, resolved
at the last moment so a rotated value is picked up without reloading the flow, and several secrets may be
listed for rotation. A request that does not verify raises VerificationError (401); a secret that is not
configured raises VerificationUnavailable (503), so the provider retries once it is.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from engine import envrefs, units
from engine import plugins as _plugins
from engine.presets.base import (
    DEFAULT_TOLERANCE,
    HEADER_NAME,
    REGISTRY,
    Carriers,
    Field,
    Preset,
    Request,
    VerifyConfig,
    register,
)

__all__ = [
    "DEFAULT_TOLERANCE", "PROVIDERS", "FormRule", "REGISTRY", "Field", "Preset", "Request", "VerifyConfig", "form_rule", "hint",
    "parse_verify", "register", "secret_fields", "sign", "verify_request",
]

Problems = list[tuple[str, str]]


# --------------------------------------------------------------------------- parsing


def providers() -> tuple[str, ...]:
    return tuple(sorted(REGISTRY))


def parse_verify(raw: Mapping[str, Any]) -> tuple[VerifyConfig | None, Problems]:
    """Validate the YAML mapping under ``trigger.verify``; return (config, problems).

    Every problem is reported, each as (sub-key, one-line message), with '' for the mapping as a whole,
    so the loader can show them all at once. The config is None whenever there is a problem: a flow is
    never half-loaded. Secrets are not resolved here (the environment may differ at request time), but a
    literal secret is checked against the preset's key format.
    """
    names = ", ".join(providers())
    if not isinstance(raw, Mapping):
        return None, [("", "must be a mapping with a provider key, e.g. {provider: github, secret: ${GITHUB_SECRET}}")]
    provider = raw.get("provider")
    if provider is None:
        return None, [("provider", f"required; expected one of: {names}")]
    if not isinstance(provider, str) or provider not in REGISTRY:
        # Which other keys are allowed depends on the provider, so nothing more can be checked.
        return None, [("provider", f"unknown verify provider {provider!r}; expected one of: {names}")]
    preset = REGISTRY[provider]
    problems: Problems = []
    allowed = {f.name for f in preset.fields}
    for key in raw:
        if key != "provider" and key not in allowed:
            expected = ", ".join(sorted(allowed))
            problems.append((str(key), f"unknown key {str(key)!r} for provider {provider}; allowed keys: {expected}"))
    secrets: tuple[str, ...] = ()
    options: dict[str, Any] = {}
    for f in preset.fields:
        if f.kind == "secret":
            secrets = _secrets(preset, raw, problems)
        elif f.name in raw:
            value = _value(f, raw[f.name], problems)
            if value is not None:
                options[f.name] = value
        elif f.required:
            problems.append((f.name, f"required: {_what(f)}"))
        elif f.default is not None:
            options[f.name] = f.default
    if preset.check is not None:
        preset.check(raw, options, problems)
    if problems:
        return None, problems
    return VerifyConfig(provider, secrets, MappingProxyType(options)), []


def _what(f: Field) -> str:
    if f.what:
        return f.what
    if f.kind == "header":
        return "an HTTP header name, e.g. X-Signature"
    return f.help


def _value(f: Field, value: Any, problems: Problems) -> Any:
    """The option's value, or None after adding a problem."""
    def bad(message: str) -> None:
        problems.append((f.name, message))

    if f.kind == "enum":
        if isinstance(value, str) and value.lower() in f.choices:
            return value.lower()
        return bad(f"must be one of {', '.join(f.choices)}")
    if f.kind == "text":
        return value if isinstance(value, str) else bad("must be a string" + (f", e.g. {f.what}" if f.what else ""))
    if f.kind == "duration":
        try:
            seconds = units.parse_duration(value)
        except ValueError:
            seconds = 0.0
        if seconds <= 0:
            return bad("must be a positive duration: seconds, or '500ms', '30s', '5m', '1h', '1d'")
        return seconds
    if not isinstance(value, str) or value == "":
        return bad(f"must be a non-empty string: {_what(f)}")
    if f.kind == "header" and not HEADER_NAME.fullmatch(value):
        return bad(f"{value!r} is not a valid HTTP header name")
    if f.kind == "url" and not envrefs.refs(value) and not value.startswith(("https://", "http://")):
        return bad(f"must be an http:// or https:// URL (or a ${{VAR}}), not {value!r}")
    return value


def _secrets(preset: Preset, raw: Mapping[str, Any], problems: Problems) -> tuple[str, ...]:
    value = raw.get("secret")
    if value is None:
        problems.append(("secret", "required: a string or a list of strings, e.g. ${WEBHOOK_SECRET}"))
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        problems.append(("secret", "must list at least one secret"))
        return ()
    secrets: list[str] = []
    for index, item in enumerate(items):
        where = f"secret[{index}]" if isinstance(value, list) else "secret"
        if not isinstance(item, str):
            problems.append(("secret", f"{where} must be a string, not {type(item).__name__}"))
        elif item == "":
            problems.append(("secret", f"{where} must not be empty"))
        elif preset.key is not None and not envrefs.refs(item) and preset.key(item) is None:
            # A literal secret can be checked now; a ${VAR} one only when it is resolved.
            problems.append(("secret", f"{where} must be {preset.key_format} ({preset.title} secret format)"))
        else:
            secrets.append(item)
    return tuple(secrets)


# --------------------------------------------------------------------------- entry points


def verify_request(config: VerifyConfig, request: Request, *, env: Mapping[str, str], now: float) -> None:
    """Return None when the request verifies; raise VerificationError (401) or VerificationUnavailable (503).

    Secrets are resolved first: a flow whose secret is not set answers 503 even to a well-signed request,
    so the provider retries once the operator sets it. With several secrets (rotation) the ones that
    resolve are used and any may match. Timestamps are checked both ways: too old is a replay, too far
    ahead is a forger or a broken clock.
    """
    REGISTRY[config.provider].verify(request, config, env, now)


def sign(config: VerifyConfig, body: bytes, *, env: Mapping[str, str], now: float, msg_id: str = "msg_hookline",
         url: str = "", content_type: str = "") -> dict[str, str]:
    """Headers that make ``body`` verify at time ``now`` with the first secret; for ``hookline send`` and tests.

    Header names come back as the provider spells them (lowercase them before verifying). ``url`` is
    where the request goes (providers that sign the URL need it) and ``content_type`` says whether the
    body is a form. Only the first listed secret is used, so a rotation list signs with its first
    entry; when it does not resolve, VerificationUnavailable is raised rather than silently signing with
    another. A ``token`` taken from a query parameter cannot be carried in headers: that raises
    ValueError, since returning no headers would produce a request that fails with a confusing 401.
    """
    headers = {"content-type": content_type} if content_type else {}
    request = Request.build(body=body, headers=headers, url=url)
    return REGISTRY[config.provider].sign(request, config, env, now, msg_id)


def secret_fields(config: VerifyConfig) -> Carriers:
    """(lowercase header names, query parameter names) whose values are secrets and must be redacted before storing.

    Signature headers are not listed: they are MACs of this one request and reveal nothing reusable.
    """
    carriers = REGISTRY[config.provider].carriers
    assert carriers is not None, "register() requires carriers for presets with secret fields"
    headers, query = carriers(config)
    return tuple(h.lower() for h in headers), tuple(query)


def hint(config: VerifyConfig) -> str:
    """One line for the UI saying what the provider sends, so a failing setup can be diagnosed."""
    text = REGISTRY[config.provider].hint(config)
    if len(config.secrets) > 1:
        text += f"; {len(config.secrets)} secrets accepted (rotation)"
    return text


FormRule = Callable[[dict[str, Any]], Any]
"""How a preset turns a parsed form body into the event; ValueError when it cannot (answered 400)."""


def form_rule(config: VerifyConfig | None) -> FormRule | None:
    """How this flow's form-encoded bodies become the event (None: the form's fields as a mapping)."""
    return REGISTRY[config.provider].form_event if config is not None else None


def _load_presets() -> None:
    """Import every module of this package but ``base``: each registers its preset, so a new provider is one file."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
        importlib.import_module(f"{__name__}.{module}")


_load_presets()
_plugins.load(_plugins.PRESETS)  # installed presets (entry points), after the built-ins: the same door

PROVIDERS: tuple[str, ...] = providers()
