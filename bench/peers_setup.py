"""The peers section's systems: Node-RED and n8n from npm (cached outside the repo), the mocks, Hookline's set-ups.

The peer flows come from ``../shared/peers`` beside the repository (HOOKLINE_BENCH_PEERS_DIR overrides;
CI has a read-only copy there), so nothing is written into it: each system gets its own temp dir.
npm installs go to ``~/.cache/hookline-bench/<name>`` (HOOKLINE_BENCH_CACHE) and are reused while the
version matches. Every process listens on 127.0.0.1 and is started through bench.common.spawn, so it
stops with the run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import (
    PY,
    ROOT,
    Backend,
    Proc,
    Stack,
    engine_env,
    free_port,
    log,
    spawn,
    start_engine_web,
    start_engine_workers,
    wait_http,
)

PEERS = Path(os.environ.get("HOOKLINE_BENCH_PEERS_DIR", ROOT.parent / "shared" / "peers"))
CACHE = Path(os.environ.get("HOOKLINE_BENCH_CACHE", Path.home() / ".cache" / "hookline-bench"))
NODE_RED_VERSION = "4.1.15"
N8N_VERSION = "2.8.4"
FLOW_ID = "bench_ack"  # hookline_bench_ack.yaml's id: the webhook path and the Idempotency-Key's flow part
HOOKLINE_SETUPS = ("serve", "web-sqlite", "web-postgres")


class PeerUnavailable(RuntimeError):
    """A peer that cannot be installed or started here; its rows say so instead of a figure."""


def peers_dir() -> Path:
    if not (PEERS / "post1k.lua").is_file():
        raise PeerUnavailable(f"{PEERS}: no post1k.lua (set HOOKLINE_BENCH_PEERS_DIR to the shared/peers folder)")
    return PEERS


def _installed_version(home: Path, package: str) -> str | None:
    try:
        return str(json.loads((home / "node_modules" / package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def npm_install(name: str, package: str, version: str, extra: dict[str, object] | None = None,
                timeout: float = 1200.0) -> Path:
    """``npm install package@version`` into CACHE/name, unless that version is there already."""
    home = CACHE / name
    if _installed_version(home, package) == version:
        return home
    npm = shutil.which("npm")
    if not npm:
        raise PeerUnavailable("npm is not installed (Debian: apt-get install nodejs npm)")
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text(json.dumps({"name": f"hookline-bench-{name}", "private": True, **(extra or {})}))
    log(f"  npm install {package}@{version} into {home} (once; reused afterwards)")
    env = {**os.environ, "npm_config_nodedir": str(Path(shutil.which("node") or "/usr/bin/node").resolve().parent.parent)}
    t0 = time.time()
    try:
        out = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"{package}@{version}"],
                             cwd=home, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"npm install {package}@{version} took more than {timeout:.0f}s") from exc
    if out.returncode or _installed_version(home, package) != version:
        raise PeerUnavailable(f"npm install {package}@{version} failed: {(out.stderr or out.stdout).strip()[-300:]}")
    log(f"  installed {package}@{version} in {time.time() - t0:.0f}s")
    return home


def start_mock(stack: Stack, js: bool = True) -> str:
    """mock_server.js (the peers' common target) or bench/keymock.py (records Idempotency-Keys); its URL."""
    port = free_port()
    if js:
        node = shutil.which("node")
        if not node:
            raise PeerUnavailable("node is not installed")
        proc = stack.add(spawn("peers-mock", [node, str(peers_dir() / "mock_server.js"), str(port), "127.0.0.1"], {},
                               stack.logdir))
    else:
        proc = stack.add(spawn("peers-keymock", [PY, "-m", "bench.keymock", "--port", str(port)], {}, stack.logdir))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/__count", proc=proc)
    return url


def start_node_red(stack: Stack, mock_url: str) -> tuple[Proc, str]:
    """Node-RED with the shared flow file and settings in a fresh user dir; returns (process, /hooks/sync URL)."""
    home = npm_install("node-red", "node-red", NODE_RED_VERSION)
    user = stack.logdir / f"node-red-{time.time_ns()}"
    user.mkdir()
    shutil.copy(peers_dir() / "nodered_settings.js", user / "settings.js")
    shutil.copy(peers_dir() / "nodered_flows.json", user / "flows.json")
    port = free_port()
    node = shutil.which("node") or "node"
    proc = stack.add(spawn("node-red", [node, str(home / "node_modules" / "node-red" / "red.js"), "-u", str(user)],
                           {"NODERED_PORT": str(port), "MOCK_URL": mock_url}, stack.logdir))
    wait_http(f"http://127.0.0.1:{port}/", timeout=90, proc=proc)
    return proc, f"http://127.0.0.1:{port}/hooks/sync"


def start_n8n(stack: Stack, mock_url: str) -> tuple[Proc, str]:
    """n8n with the shared workflow imported and published into a fresh user folder (SQLite, executions saved)."""
    home = npm_install("n8n", "n8n", N8N_VERSION, extra={"overrides": {"xlsx": "0.18.5"}}, timeout=1800)
    user = stack.logdir / f"n8n-{time.time_ns()}"
    user.mkdir()
    wf = user / "workflow.json"
    wf.write_text((peers_dir() / "n8n_wf_ack.json").read_text().replace("__MOCK_URL__", mock_url))
    port = free_port()
    env = {**os.environ, "N8N_USER_FOLDER": str(user), "N8N_PORT": str(port), "N8N_LISTEN_ADDRESS": "127.0.0.1",
           "N8N_DIAGNOSTICS_ENABLED": "false", "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
           "N8N_PERSONALIZATION_ENABLED": "false", "N8N_HIRING_BANNER_ENABLED": "false"}
    n8n = str(home / "node_modules" / ".bin" / "n8n")
    for args in (["import:workflow", f"--input={wf}"], ["publish:workflow", "--id=benchAck00000001"]):
        out = subprocess.run([n8n, *args], env=env, capture_output=True, text=True, timeout=300)
        if out.returncode:
            raise PeerUnavailable(f"n8n {args[0]} failed: {(out.stderr or out.stdout).strip()[-300:]}")
    env["N8N_RUNNERS_BROKER_PORT"] = str(free_port())  # its default (5679) would clash with another n8n
    proc = stack.add(spawn("n8n", [n8n, "start"], {k: v for k, v in env.items() if k.startswith("N8N_")}, stack.logdir))
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=180, proc=proc)
    url = f"http://127.0.0.1:{port}/webhook/bench-ack"
    _wait_webhook(url, proc, timeout=240)  # n8n activates workflows well after /healthz answers
    return proc, url


def _wait_webhook(url: str, proc: Proc, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise PeerUnavailable(f"n8n exited ({proc.popen.returncode}): {proc.tail(300)}")
        req = urllib.request.Request(url, data=b'{"id":"warm","amount":150,"customer":{"email":"a@b.c"}}',
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - loopback
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise PeerUnavailable(f"n8n webhook answers {exc.code}") from exc
        except OSError:
            pass
        time.sleep(1)
    raise PeerUnavailable(f"n8n did not register its webhook within {timeout:.0f}s")


def noop_app() -> object:
    """Flask under the same gunicorn line answering 202 without storing anything: the HTTP floor of this stack."""
    from bench.baseline_ingest import hook_app

    return hook_app(lambda _flow, _body: ({"ok": True}, 202))


def hookline_flows(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(peers_dir() / "hookline_bench_ack.yaml", directory / "bench_ack.yaml")
    return directory


def start_hookline(setup: str, backend: Backend, stack: Stack, mock_url: str, **extra: str) -> tuple[list[Proc], str]:
    """One of HOOKLINE_SETUPS on ``backend``; returns (the processes whose trees make up the system, hook URL)."""
    flows = hookline_flows(backend.tmp / "flows")
    env = engine_env(backend, flows, mock_url, MOCK_URL=mock_url, **extra)
    port = free_port()
    if setup == "serve":
        proc = stack.add(spawn("hookline-serve", [PY, "-m", "engine.app.cli", "serve", "--flows", str(flows), "--host",
                                                  "127.0.0.1", "--port", str(port)], env, stack.logdir))
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        procs = [proc]
    else:
        procs = [start_engine_web(stack, env, port), *start_engine_workers(stack, env, 1)]
    return procs, f"http://127.0.0.1:{port}/hooks/{FLOW_ID}"


def start_worker(stack: Stack, backend: Backend, mock_url: str, **extra: str) -> Proc:
    """A further `hookline worker` on the same store (after a SIGKILL, as a supervisor would restart it)."""
    env = engine_env(backend, hookline_flows(backend.tmp / "flows"), mock_url, MOCK_URL=mock_url, **extra)
    (proc,) = start_engine_workers(stack, env, 1)
    proc.name = f"engine-worker-{time.time_ns()}"
    return proc
