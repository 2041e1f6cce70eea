"""Fill a store with N realistic runs for the runs-page benchmark: ``python -m bench.fill URL --runs 1000000``.

Bulk inserts into the real schema (``engine.migrate.upgrade``, tables reflected, so new migrations are
picked up), with a progress bar: on SQLite an executemany of the SQLAlchemy Core INSERT compiled for
the dialect; on PostgreSQL COPY through the same SQLAlchemy connection (an executemany there would
take most of the 25-minute budget on its own). Shape: five flows with skewed
volume over the last 30 days, ~93% succeeded / 3% failed / 3% filtered / the rest waiting or
queued, a ~700-byte raw event per run, three step rows per run (filter, transform, http with
request/response), ``run_index`` rows (order_id, customer) for the Shopify flow, and unique
dedupe keys. The fill is deterministic (seeded), so the probes in bench/runs_page.py can name rows.
A marker table records what was filled, so a filled store is reused (--refill to redo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from typing import Any

FLOWS = [("stripe_payment_sync", 0.40), ("shopify_order_sync", 0.30), ("github_notify", 0.20), ("bench_one", 0.07),
         ("legacy_crm_sync", 0.03)]
STATUSES = [("succeeded", 0.930), ("failed", 0.030), ("filtered", 0.030), ("waiting", 0.005), ("queued", 0.005)]
DAYS = 30
MARKER = "bench_fill_marker"
FILL_VERSION = 2  # bump when the shape of filled rows changes: cached stores are then refilled
SEED = 5


def _pick(table: list[tuple[str, float]], x: float) -> str:
    acc = 0.0
    for name, share in table:
        acc += share
        if x < acc:
            return name
    return table[-1][0]


def dedupe_key(i: int) -> str:
    """Unique and ascending with i (random keys would make the fill's unique-index inserts random I/O)."""
    return f"evt_1N{i:010d}Xq7Z{i % 9973:04d}"


def order_id(i: int) -> str:
    return str(5_000_000_000 + i)


def flow_of(i: int) -> str:
    return _pick(FLOWS, random.Random(i * 7919 + SEED).random())


def _body(i: int, flow: str, ts: float) -> bytes:
    c = i % 50000
    return (
        f'{{"id":"{dedupe_key(i)}","object":"event","type":"payment_intent.succeeded","created":{int(ts)},'
        f'"data":{{"object":{{"id":"pi_{i:024d}","amount":{1000 + i % 90000},"currency":"eur",'
        f'"customer":"cus_{c:08d}","receipt_email":"c{c}@example.com","description":"Order #{order_id(i)} for {flow}",'
        f'"status":"succeeded","metadata":{{"order_id":"{order_id(i)}","channel":"web","region":"eu-west-1"}},'
        f'"payment_method_types":["card"],"livemode":false,"capture_method":"automatic",'
        f'"statement_descriptor":"HOOKLINE BENCH","shipping":{{"name":"Customer {c}","address":{{"line1":"{c} Main '
        f'Street","city":"Lyon","postal_code":"69001","country":"FR"}}}}}}}}}}'
    ).encode()


def _progress(done: int, total: int, t0: float, label: str) -> None:
    width = 30
    frac = done / total if total else 1.0
    rate = done / max(1e-9, time.time() - t0)
    eta = (total - done) / rate if rate else 0
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    sys.stdout.write(f"\r  {label} [{bar}] {done:,}/{total:,} {rate:,.0f} runs/s eta {eta:,.0f}s ")
    sys.stdout.flush()
    if done >= total:
        sys.stdout.write("\n")


def filled(url: str) -> dict[str, Any] | None:
    """The marker of a previous fill, or None."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            if not sa.inspect(c).has_table(MARKER):
                return None
            row = c.execute(sa.text(f"select info from {MARKER}")).scalar()
            return json.loads(row) if row else None
    finally:
        engine.dispose()


def fill(url: str, runs: int, batch: int = 10000, quiet: bool = False) -> dict[str, Any]:
    """Migrate and fill; returns the marker info (what was inserted and how long it took)."""
    import sqlalchemy as sa

    from engine.migrate import upgrade
    from engine.store import make_engine

    upgrade(url)
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":  # bulk-load settings: no FK checks, no syncs, a big page cache
        engine.dispose()
        engine = sa.create_engine(url)

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            for pragma in ("journal_mode=WAL", "synchronous=OFF", "foreign_keys=OFF", "cache_size=-262144"):
                dbapi_conn.execute(f"PRAGMA {pragma}")
    md = sa.MetaData()
    md.reflect(engine, only=["flow_versions", "events", "runs", "step_runs", "run_index"])
    tables = {n: md.tables[n] for n in ("flow_versions", "events", "runs", "step_runs", "run_index")}
    pg = engine.dialect.name == "postgresql"
    now = time.time()
    start = now - DAYS * 86400
    t0 = time.time()
    versions = {name: hashlib.sha256(name.encode()).hexdigest()[:16] for name, _ in FLOWS}
    with engine.begin() as c:
        c.execute(sa.insert(tables["flow_versions"]), [
            {"version": v, "flow_id": f, "path": f"flows/{f}.yaml", "source": f"id: {f}\n", "created_at": start}
            for f, v in versions.items()])
    writer = _CopyWriter(tables) if pg else _InsertWriter(tables, engine.dialect)
    rng = random.Random(SEED)
    step_id = 0
    headers = json.dumps([["Content-Type", "application/json"], ["User-Agent", "Stripe/1.0"]])
    transform_out = '{"email":"c%d@example.com","amount":%.2f}'
    # the shapes engine/steps/http.py records, so the run detail page renders them as it would real ones
    request_ok = json.dumps({"method": "POST", "url": "https://crm.example.com/contacts",
                             "headers": {"Authorization": "[redacted]", "Content-Type": "application/json"},
                             "body": '{"email":"x"}', "timeout": 10.0})
    response_ok = json.dumps({"status": 201, "headers": {"content-type": "application/json"}, "body": '{"id":"c_1"}',
                              "elapsed_ms": 42.5})
    response_bad = json.dumps({"status": 503, "headers": {"content-type": "text/plain"}, "body": "busy",
                               "elapsed_ms": 12.0})
    for lo in range(0, runs, batch):
        hi = min(runs, lo + batch)
        rows: dict[str, list[dict[str, Any]]] = {"events": [], "runs": [], "step_runs": [], "run_index": []}
        for i in range(lo, hi):
            rid = i + 1
            ts = start + (DAYS * 86400) * (i / runs) + rng.random()
            flow = flow_of(i)
            status = _pick(STATUSES, rng.random())
            terminal = status in ("succeeded", "failed", "filtered")
            key = dedupe_key(i)
            rows["events"].append({"id": rid, "flow_id": flow, "received_at": ts, "method": "POST", "query": "",
                                   "headers": headers, "body": _body(i, flow, ts), "content_type": "application/json"})
            rows["runs"].append({
                "id": rid, "flow_id": flow, "flow_version": versions[flow], "event_id": rid, "status": status,
                "dedupe_key": key, "order_key": order_id(i) if flow == "shopify_order_sync" else None,
                "created_at": ts, "updated_at": ts + 0.2, "started_at": ts + 0.01,
                "finished_at": ts + 0.2 if terminal else None, "next_attempt_at": ts + 60 if status == "waiting" else None,
                "error": "step crm: POST crm.example.com answered 503" if status == "failed" else None,
                "reason": "step crm: timed out" if status == "waiting" else None, "deliveries": 1})
            plan = [("filter", "succeeded" if status != "filtered" else "filtered")]
            if status != "filtered":
                plan += [("transform", "succeeded"), ("http", "failed" if status == "failed" else "succeeded")]
            for pos, (sid, sstatus) in enumerate(plan):
                step_id += 1
                row: dict[str, Any] = {"id": step_id, "run_id": rid, "path": sid, "position": pos, "attempt": 1,
                                       "status": sstatus, "started_at": ts + pos * 0.05,
                                       "finished_at": ts + pos * 0.05 + 0.04}
                if sid == "transform":
                    row["output"] = transform_out % (i % 50000, (1000 + i % 90000) / 100)
                elif sid == "http":
                    row["request"] = request_ok
                    row["response"] = response_bad if sstatus == "failed" else response_ok
                    row["idempotency_key"] = key[4:] + "00000000"
                    if sstatus == "failed":
                        row["error_type"] = "HttpStepError"
                        row["error_message"] = "POST crm.example.com answered 503"
                rows["step_runs"].append(row)
            if flow == "shopify_order_sync":
                rows["run_index"].append({"run_id": rid, "name": "order_id", "value": order_id(i)})
                rows["run_index"].append({"run_id": rid, "name": "customer", "value": f"c{i % 50000}@example.com"})
        with engine.begin() as c:
            for name in ("events", "runs", "step_runs", "run_index"):
                if rows[name]:
                    writer.write(c, name, rows[name])
        if not quiet:
            _progress(hi, runs, t0, engine.dialect.name)
    info = {"version": FILL_VERSION, "runs": runs, "steps": step_id, "seconds": round(time.time() - t0, 1), "filled_at": now}
    with engine.begin() as c:
        if pg:
            for table in ("events", "runs", "step_runs"):
                c.execute(sa.text(f"select setval(pg_get_serial_sequence('{table}', 'id'), (select max(id) from {table}))"))
        c.execute(sa.text(f"create table {MARKER} (info text)"))
        c.execute(sa.text(f"insert into {MARKER} values (:i)"), {"i": json.dumps(info)})
    if pg:  # autovacuum would have analyzed tables this size by now; SQLite never analyzes by itself
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sa.text("analyze"))
    engine.dispose()
    return info


class _InsertWriter:
    """executemany of a Core INSERT compiled for the dialect; JSON columns arrive pre-serialised."""

    def __init__(self, tables: dict[str, Any], dialect: Any) -> None:
        import sqlalchemy as sa

        self.cols = {n: [c.name for c in t.columns] for n, t in tables.items()}
        self.sql = {}
        for n, t in tables.items():
            compiled = sa.insert(t).compile(dialect=dialect, column_keys=self.cols[n])
            self.sql[n] = str(compiled)
            if compiled.positiontup is not None:
                self.cols[n] = list(compiled.positiontup)

    def write(self, conn: Any, name: str, rows: list[dict[str, Any]]) -> None:
        cols = self.cols[name]
        conn.exec_driver_sql(self.sql[name], [tuple(r.get(c) for c in cols) for r in rows])


class _CopyWriter:
    """COPY ... FROM STDIN on the SQLAlchemy connection's psycopg connection (10x executemany)."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.cols = {n: [c.name for c in t.columns] for n, t in tables.items()}

    def write(self, conn: Any, name: str, rows: list[dict[str, Any]]) -> None:
        cols = self.cols[name]
        cur = conn.connection.driver_connection.cursor()
        with cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(tuple(r.get(c) for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="SQLAlchemy URL of an empty store (it is migrated first)")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10000)
    args = parser.parse_args()
    previous = filled(args.url)
    if previous:
        print(f"already filled: {previous}")
        return
    print(fill(args.url, args.runs, args.batch))


if __name__ == "__main__":
    main()
