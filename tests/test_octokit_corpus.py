"""Real GitHub payloads (npm @octokit/webhooks-examples) through the values GitHub flows are written with.

`{{ event.repository.full_name | default('') }}` failed on every payload without a repository (org,
installation, sponsorship... events): StrictUndefined raised on the attribute of the missing parent.
The package is installed once into a cache outside the repository; without npm the test is skipped,
except under CI, where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from engine import Event, RunStatus, load_flow, run_flow

VERSION = "7.6.1"
CACHE = Path(os.environ.get("HOOKLINE_TEST_CACHE", Path.home() / ".cache" / "hookline-test")) / "octokit"
INDEX = CACHE / "node_modules" / "@octokit" / "webhooks-examples" / "api.github.com" / "index.json"

FLOW = """\
id: github-names
steps:
  - id: names
    transform:
      repo: "{{ event.repository.full_name | default('') }}"
      sender: "{{ event.sender.login | default('') }}"
      owner: "{{ event.repository.owner.login | default(none) }}"
"""


@lru_cache(maxsize=1)
def examples() -> list[dict[str, Any]]:
    """Every example payload of the pinned package, installing it into the cache on first use."""
    stamp = CACHE / f"installed-{VERSION}"
    if not (INDEX.exists() and stamp.exists()):
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI"):
                pytest.fail("npm is needed to install @octokit/webhooks-examples under CI")
            pytest.skip("npm is not installed: cannot fetch @octokit/webhooks-examples")
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--no-save",
                               f"@octokit/webhooks-examples@{VERSION}"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not INDEX.exists():
            message = f"npm install @octokit/webhooks-examples@{VERSION} failed: {done.stderr.strip()[-300:]}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        stamp.write_text(VERSION)
    return [example for group in json.loads(INDEX.read_text()) for example in group["examples"]]


def test_every_github_example_renders_repository_and_sender_with_defaults() -> None:
    payloads = examples()
    assert len(payloads) >= 300, len(payloads)
    flow = load_flow(FLOW, "flows/github-names.yaml")
    without_repository = 0
    for payload in payloads:
        result = run_flow(flow, Event(body=payload))
        assert result.status is RunStatus.SUCCEEDED, (result.error, sorted(payload))
        [step] = result.steps
        repository = payload.get("repository") or {}
        without_repository += not repository
        assert step.output == {"repo": repository.get("full_name", ""),
                               "sender": (payload.get("sender") or {}).get("login", ""),
                               "owner": (repository.get("owner") or {}).get("login")}
    assert without_repository > 0  # the case this test is about is in the corpus


def test_a_missing_parent_without_default_still_fails_loudly() -> None:
    payload = next(p for p in examples() if "repository" not in p)
    flow = load_flow(FLOW.replace(" | default('') }}\"\n      sender", " }}\"\n      sender", 1),
                     "flows/github-names.yaml")
    result = run_flow(flow, Event(body=payload))
    assert result.status is RunStatus.FAILED
    assert "flows/github-names.yaml:5: steps[0].transform.repo: 'dict object' has no attribute 'repository'" in (
        result.error or ""), result.error
