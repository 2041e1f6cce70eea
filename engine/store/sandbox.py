"""The built-in sandbox receiver's requests (web/sandbox.py): recorded, listed newest first."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from engine.store.connect import StoreBase
from engine.store.schema import SandboxRequestRow


class SandboxStore(StoreBase):
    def sandbox_record(self, name: str, method: str, path: str, headers: list[tuple[str, str]], body: str,
                       response_id: str) -> int:
        with self._tx() as s:
            row = SandboxRequestRow(name=name, method=method, path=path, headers=[list(h) for h in headers],
                                    body=body, response_id=response_id, created_at=time.time())
            s.add(row)
            s.flush()
            return row.id

    def sandbox_list(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        stmt = select(SandboxRequestRow).order_by(SandboxRequestRow.id.desc()).limit(limit)
        if name:
            stmt = stmt.where(SandboxRequestRow.name == name)
        with self._tx(write=False) as s:
            return [
                {"id": r.id, "name": r.name, "method": r.method, "path": r.path, "headers": r.headers,
                 "body": r.body, "response_id": r.response_id, "created_at": r.created_at}
                for r in s.execute(stmt).scalars()
            ]
