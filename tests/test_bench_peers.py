"""The peers benchmark's own parts: the key-recording mock, the profile's layer split, the targets it reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.peers_profile import OTHER, WAIT, layer_of
from bench.peers_report import ceilings, peers_table, peers_targets
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def keymock() -> Any:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.keymock", "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/__count", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=20, what="keymock listening")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_keymock_counts_hits_and_records_each_idempotency_key(keymock: str) -> None:
    with httpx.Client(base_url=keymock) as c:  # one keep-alive connection for several requests
        for key in ("k1", "k2", "k1"):
            assert c.post("/", json={"x": 1}, headers={"Idempotency-Key": key}).json() == {"ok": True}
        c.post("/", content=b"no key")
        assert c.get("/__count").json()["hits"] == 4
        assert c.get("/__keys").text.split() == ["k1", "k2", "k1", "-"]
        c.post("/__reset")
        assert c.get("/__count").json()["hits"] == 0
        assert c.get("/__keys").text == ""


def test_profile_gives_each_sample_to_its_innermost_layer() -> None:
    flask_sql = ("Thread.run (threading.py:982);ThreadWorker.handle (gunicorn/workers/gthread.py:553);"
                 "Flask.wsgi_app (flask/app.py:1511);receive (web/hooks.py:120);accept (engine/store.py:700);"
                 "Connection.execute (sqlalchemy/engine/base.py:1416)")
    assert layer_of(flask_sql) == "SQL (SQLAlchemy, driver, store)"
    assert layer_of(flask_sql.rsplit(";", 2)[0]) == "Hookline web code (hooks, auth)"
    assert layer_of(flask_sql + ";Logger.info (logging/__init__.py:1489)") == "logging"
    assert layer_of("Thread.run (threading.py:982);DefaultDialect.do_commit (sqlalchemy/engine/default.py:954)"
                    ).startswith(WAIT)
    assert layer_of("Thread.run (threading.py:982)") == OTHER


def _run(system: str, runs_per_s: float, rss: float = 60.0) -> dict[str, Any]:
    return {"system": system, "acked_rps": runs_per_s * 2, "p50_ms": 10.0, "p99_ms": 50.0, "runs_per_s": runs_per_s,
            "cpu_ms_per_run": 5.0, "rss_total_mb": rss * 3, "rss_max_mb": rss, "processes": 3}


def test_targets_are_ratios_to_node_red_and_to_the_faster_ceiling() -> None:
    out = {"runs": [_run("node-red", 1000.0), _run("web-sqlite", 600.0), _run("web-postgres", 400.0),
                    _run("serve", 290.0, rss=120.0)],
           "ingest": [{"system": "hookline", "backend": "sqlite", "acked_rps": 450.0},
                      {"system": "ceiling-sync", "backend": "sqlite", "acked_rps": 600.0},
                      {"system": "ceiling-gthread", "backend": "sqlite", "acked_rps": 500.0}],
           "kill": [{"backend": "sqlite", "lost": 0, "doubled": 0, "unfinished": 0, "drained": True,
                     "killed_after_s": 3.3, "acked": 10, "runs": 10, "statuses": {"succeeded": 10}, "calls": 11,
                     "distinct_keys": 10, "resent": 1, "drain_s": 9.0}]}
    met = {t["target"]: (t["value"], t["met"]) for t in peers_targets(out)}
    assert met["web-sqlite completed runs/s vs Node-RED"] == (0.6, True)
    assert met["web-postgres completed runs/s vs Node-RED"] == (0.4, False)
    assert met["serve completed runs/s vs Node-RED"] == (0.29, False)
    assert ceilings(out)["sqlite"]["ceiling"] == 600.0
    assert met["ingest sqlite vs durable-ingest ceiling"] == (0.75, False)
    assert met["Hookline peak RSS per process (MB)"] == (120.0, False)
    assert met["SIGKILLed worker (sqlite): lost / doubled"] == ("0 / 0", True)
    table = peers_table(out)
    assert "| Hookline `web --workers 2` + `worker`, SQLite | 1,200 | 10 / 50 | 600 | 0.60 |" in table

