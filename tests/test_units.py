"""engine.units: one grammar for durations, sizes and rates, used by every key and setting that takes one."""

from __future__ import annotations

from typing import Any

import pytest

from engine import destinations, steps, units
from engine.config import Settings
from engine.presets import parse_verify
from tests.conftest import make_flow


@pytest.mark.parametrize(("value", "seconds"), [
    (0, 0.0), (2.5, 2.5), ("10", 10.0), ("500ms", 0.5), ("1.5s", 1.5), (" 2m ", 120.0), ("1h", 3600.0),
    ("1d", 86400.0), ("0.25d", 21600.0),
])
def test_durations(value: Any, seconds: float) -> None:
    assert units.parse_duration(value) == seconds


@pytest.mark.parametrize("value", [True, -1, "-1s", "5 minutes", "1w", "10S", "", "s", None, [], "1e3"])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        units.parse_duration(value)


@pytest.mark.parametrize(("value", "size"), [
    (0, 0), (1024, 1024), ("512", 512), ("2b", 2), ("1kb", 1000), ("1KiB", 1024), ("1k", 1024), ("10MiB", 10 * 1024**2),
    ("5mb", 5_000_000), ("2m", 2 * 1024**2), ("1GiB", 1024**3), ("1GB", 10**9),
])
def test_sizes(value: Any, size: int) -> None:
    assert units.parse_size(value) == size


@pytest.mark.parametrize("value", [True, -1, 1.5, "1.5MiB", "10 megabytes", "1tb", "", None])
def test_bad_sizes(value: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        units.parse_size(value)


@pytest.mark.parametrize(("value", "rate"), [
    (3, 3.0), (0.5, 0.5), ("10/s", 10.0), ("600/m", 10.0), ("600/min", 10.0), ("3600/hour", 1.0), ("86400/d", 1.0),
    ("1 / sec", 1.0),
])
def test_rates(value: Any, rate: float) -> None:
    assert units.parse_rate(value) == rate


@pytest.mark.parametrize("value", [0, -1, True, "0/s", "10", "10/week", "fast", None])
def test_bad_rates(value: Any) -> None:
    with pytest.raises(ValueError, match="rate"):
        units.parse_rate(value)


def test_every_call_site_uses_the_one_parser() -> None:
    assert steps.parse_duration is units.parse_duration and destinations.parse_rate is units.parse_rate
    assert make_flow(trigger={"max_body": "1MiB"}).trigger.max_body == 1024**2
    config, _ = parse_verify({"provider": "stripe", "secret": "x", "tolerance": "500ms"})
    assert config is not None and config.options["tolerance"] == 0.5
    settings = Settings.from_env({"HOOKLINE_MAX_BODY": "5MiB", "HOOKLINE_HTTP_TIMEOUT_S": "500ms",
                                  "HOOKLINE_LEASE_S": "2m", "HOOKLINE_WORKER_THREADS": "3"})
    assert (settings.max_body, settings.http_timeout_s, settings.lease_s, settings.worker_threads) == (
        5 * 1024**2, 0.5, 120.0, 3)
    assert Settings.from_env({"HOOKLINE_MAX_BODY": "1048576"}).max_body == 1048576
    with pytest.raises(ValueError, match="HOOKLINE_MAX_BODY"):
        Settings.from_env({"HOOKLINE_MAX_BODY": "lots"})
