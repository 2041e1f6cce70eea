"""Kept so existing imports keep working: the verification presets live in :mod:`engine.presets`.

New code imports ``engine.presets``; this module only re-exports its public names.
"""

from engine.presets import PROVIDERS, Request, VerifyConfig, hint, parse_verify, secret_fields, sign, verify_request

__all__ = ["PROVIDERS", "Request", "VerifyConfig", "hint", "parse_verify", "secret_fields", "sign", "verify_request"]
