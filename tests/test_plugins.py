"""The plugin door (engine.plugins): a package installed beside Hookline adds a step type and a preset.

The package is made here in a tmp dir (modules plus a ``*.dist-info`` with ``entry_points.txt``, which is
what pip installs) and used from a subprocess whose PYTHONPATH points at it, so this process's registries
stay as they are. A third entry point fails to import: one line naming it, and everything else works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STEP_MODULE = '''
from engine.steps import Outcome, StepContext, StepType, register


def execute(ctx: StepContext) -> Outcome:
    return Outcome(output=str(ctx.step.config.render(ctx.render)).upper())


register(StepType(name="shout", help="Upper-cases a templated text.", shape="value", build=lambda expr: expr,
                  execute=execute, example='shout: "hello {{ event.name }}"'))
'''

PRESET_MODULE = '''
from engine.errors import VerificationError
from engine.presets.base import SECRET, Preset, equal, header, keys, register, resolve_one, utf8


def verify(request, config, env, now):
    given = utf8(header(request, "X-Demo-Token"))
    if not any(equal(given, key) for key in keys(config, env)):
        raise VerificationError("demo token does not match")


def sign(request, config, env, now, msg_id):
    return {"X-Demo-Token": resolve_one(config.secrets[0], env)[0]}


register(Preset(name="demo", title="Demo", summary="A token in X-Demo-Token.", fields=(SECRET,), verify=verify,
                sign=sign, hint=lambda config: "a token in the X-Demo-Token header",
                example={"provider": "demo", "secret": "${DEMO_SECRET}"},
                carriers=lambda config: (("x-demo-token",), ())))
'''

ENTRY_POINTS = """\
[hookline.steps]
shout = hookline_demo.steps
broken = hookline_demo.broken

[hookline.presets]
demo = hookline_demo.presets
"""

FLOW = """\
id: shouting
trigger:
  verify: {provider: demo, secret: "${DEMO_SECRET}"}
steps:
  - id: loud
    shout: "hello {{ event.name }}"
"""

CHECK = textwrap.dedent('''
    import sys
    from engine import plugins
    from engine.errors import VerificationError
    from engine.loader import load_flow_file
    from engine.model import Event, Headers
    from engine.presets import Request, secret_fields, verify_request
    from engine.runner import run_flow

    flow = load_flow_file(sys.argv[1])
    result = run_flow(flow, Event(body={"name": "ada"}, headers=Headers({})), env={})
    print("run", result.status.value, result.steps[-1].output)
    env = {"DEMO_SECRET": "s3cret"}
    verify_request(flow.trigger.verify, Request.build(headers={"X-Demo-Token": "s3cret"}, body=b"{}"), env=env, now=0)
    try:
        verify_request(flow.trigger.verify, Request.build(headers={"X-Demo-Token": "guess"}, body=b"{}"), env=env, now=0)
    except VerificationError as exc:
        print("refused", exc)
    print("redacted", secret_fields(flow.trigger.verify)[0])
    print("loaded", plugins.LOADED[plugins.STEPS], plugins.LOADED[plugins.PRESETS], len(plugins.FAILED))
''')


def _plugin(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    pkg = site / "hookline_demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text(STEP_MODULE)
    (pkg / "presets.py").write_text(PRESET_MODULE)
    (pkg / "broken.py").write_text("import hookline_no_such_module\n")
    dist = site / "hookline_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hookline-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def _python(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)] if site else [str(ROOT)])
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_plugin_step_type_and_preset_load_validate_run_and_verify(tmp_path: Path) -> None:
    site = _plugin(tmp_path)
    flow = tmp_path / "shouting.yaml"
    flow.write_text(FLOW)
    done = _python(["-c", CHECK, str(flow)], site, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "run succeeded HELLO ADA",
        "refused demo token does not match",
        "redacted ('x-demo-token',)",
        "loaded ['shout'] ['demo'] 1",
    ]
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == ["plugin 'broken' (hookline.steps = hookline_demo.broken) did not load: "
                      "ModuleNotFoundError: No module named 'hookline_no_such_module'"]

    validated = _python(["-m", "engine.app.cli", "validate", str(flow)], site, tmp_path)
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_without_the_plugin_its_step_type_and_provider_are_unknown(tmp_path: Path) -> None:
    flow = tmp_path / "shouting.yaml"
    flow.write_text(FLOW)
    done = _python(["-m", "engine.app.cli", "validate", str(flow)], None, tmp_path)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "shout" in out and "demo" in out
