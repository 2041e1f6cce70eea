"""FlowCatalog: the flows directory, reloaded when files change, invalid flows kept with their errors."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.connections import CONNECTIONS_FILE, Connection
from engine.connections.load import ConnectionSet, check_flow, connections_file, load_connections_file
from engine.errors import FlowError, FlowInvalid
from engine.loader import id_line, load_flow_file
from engine.model import Flow

log = logging.getLogger("hookline.catalog")


@dataclass
class BrokenFlow:
    """A file that did not load: listed in the UI, its webhook answers 503."""

    id: str
    path: str
    errors: list[FlowError] = field(default_factory=list)


def flow_files(directory: str | Path) -> list[Path]:
    """``*.yaml``/``*.yml`` at the top of the directory; fixtures (``*.test.yaml``, ``tests/``) are not flows."""
    root = Path(directory)
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.endswith((".test.yaml", ".test.yml"))
        and p.name != CONNECTIONS_FILE
    )


class FlowCatalog:
    def __init__(self, directory: str | Path, *, check_interval: float = 1.0) -> None:
        self.directory = Path(directory)
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._stamps: dict[Path, tuple[float, int]] = {}
        self._by_path: dict[Path, Flow | BrokenFlow] = {}
        self._by_id: dict[str, Flow | BrokenFlow] = {}
        self._checked = 0.0
        self.connections = ConnectionSet()  # <directory>/connections.yaml, reloaded with the flows
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Reload changed files; cheap (one stat per file) and throttled to once per check_interval."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return
        with self._lock:
            self._checked = now
            files = flow_files(self.directory)
            stamps: dict[Path, tuple[float, int]] = {}
            conn_file = connections_file(self.directory)
            for p in [*files, conn_file] if conn_file.exists() else files:
                try:
                    st = p.stat()
                except OSError:
                    continue
                stamps[p] = (st.st_mtime, st.st_size)
            if stamps == self._stamps:
                return
            if self._stamps.get(conn_file) != stamps.get(conn_file):
                self.connections = load_connections_file(conn_file)
                for err in self.connections.errors:
                    log.warning("invalid connection: %s", err)
            by_path: dict[Path, Flow | BrokenFlow] = {}
            for p, stamp in stamps.items():
                if p == conn_file:
                    continue
                if self._stamps.get(p) == stamp and p in self._by_path:
                    by_path[p] = self._by_path[p]
                    continue
                try:
                    by_path[p] = load_flow_file(p)
                    log.info("loaded flow %s from %s", by_path[p].id, p)
                except FlowInvalid as exc:
                    by_path[p] = BrokenFlow(p.stem, str(p), exc.errors)
                    for err in exc.errors:
                        log.warning("invalid flow: %s", err)
                except Exception as exc:  # noqa: BLE001 - one file must never take the other flows down (I11)
                    log.exception("flow file %s crashed the loader", p)
                    by_path[p] = BrokenFlow(p.stem, str(p), [FlowError(
                        f"could not load: {type(exc).__name__}: {str(exc)[:200]}", file=str(p))])
            by_id: dict[str, Flow | BrokenFlow] = {}
            for p, item in by_path.items():
                if item.id in by_id:
                    first = by_id[item.id]
                    err = FlowError(f"flow id {item.id!r} is already used by {first.path}", file=str(p),
                                    line=id_line(item) if isinstance(item, Flow) else 1, path="id")
                    by_path[p] = BrokenFlow(item.id + "@" + p.name, str(p), [err])
                    by_id[by_path[p].id] = by_path[p]
                    continue
                by_id[item.id] = self._with_connections(item)
            self._stamps, self._by_path, self._by_id = stamps, by_path, by_id

    def _with_connections(self, item: Flow | BrokenFlow) -> Flow | BrokenFlow:
        """A flow naming an unknown or broken connection is not served (its steps could never authenticate)."""
        if isinstance(item, BrokenFlow):
            return item
        errors = check_flow(item, self.connections)
        return BrokenFlow(item.id, item.path, errors) if errors else item

    def connection(self, name: str) -> Connection | None:
        """A valid connection by name, as the file is now (the runtime's lookup)."""
        self.refresh()
        return self.connections.get(name)

    def get(self, flow_id: str) -> Flow | BrokenFlow | None:
        self.refresh()
        return self._by_id.get(flow_id)

    def all(self) -> list[Flow | BrokenFlow]:
        self.refresh()
        return sorted(self._by_id.values(), key=lambda f: f.id)

    def flows(self) -> list[Flow]:
        return [f for f in self.all() if isinstance(f, Flow)]
