"""The composition root: what a process runs on, built once from one Settings.

``hookline serve``, ``web`` (engine/app/wsgi.py) and ``worker`` all call build_runtime (make_app for a
web app), so the store, the flow catalog, the service and the queue a process uses come from the
settings it was given, not from the environment read again somewhere at import. The Huey
tasks are module-level by nature (a consumer finds them by name), so a process has one runtime:
building another rebinds engine.app.tasks to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.config import Settings

if TYPE_CHECKING:
    from flask import Flask
    from huey import Huey

    from engine.catalog import FlowCatalog
    from engine.service import Service
    from engine.store import RunStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: RunStore
    catalog: FlowCatalog
    service: Service
    huey: Huey


def build_runtime(settings: Settings) -> Runtime:
    """Store, catalog and service on ``settings``, with the queue (Huey on Redis or SQLite) from the same settings.

    Raises SettingsError for a setting only the service reads (HOOKLINE_DESTINATIONS), so a process
    fails at start-up, not at its first call.
    """
    from engine.app import tasks
    from engine.catalog import FlowCatalog
    from engine.service import Service
    from engine.store import RunStore

    huey = tasks.make_huey(settings)
    store = RunStore(settings.database_url)
    catalog = FlowCatalog(settings.flows_dir)
    service = Service(settings, store, catalog, enqueue=tasks.enqueue, pending=huey.pending_count)
    tasks.bind(huey, service)
    return Runtime(settings, store, catalog, service, huey)


def make_app(settings: Settings) -> Flask:
    """The web app of a process on its own runtime: what ``gunicorn engine.app.wsgi:app`` serves."""
    from web import create_app

    return create_app(settings, service=build_runtime(settings).service)
