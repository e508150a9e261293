"""POST /api/events throughput: store events/s into the outbox, next to POST /api/customers rows/s.

    python bench/events.py [--batch 100] [--requests 20] [--database-url URL] [--redis-url URL]

Drives the app through Flask's test client (no HTTP server: the figure is the engine's own
cost per event: validation, the store_events and outbox rows in one transaction, and one RQ
enqueue per email after the commit). The reference, measured in the same run on the same
database, is POST /api/customers with the same number of records per request. Jobs are left in
Redis unsent; the Redis database given is flushed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter import create_app  # noqa: E402

TOKEN = "bench-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def rate(client, path: str, bodies: list[list[dict]]) -> float:
    """Items per second over every body POSTed to ``path``."""
    start = time.perf_counter()
    for body in bodies:
        response = client.post(path, data=json.dumps(body), headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
    return sum(len(b) for b in bodies) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        app = create_app(
            {
                "SECRET_KEY": "bench",
                "DATABASE_URL": url,
                "REDIS_URL": args.redis_url,
                "API_TOKEN": TOKEN,
                "OUTBOX_DIR": f"{tmp}/outbox",
            }
        )
        runtime = app.extensions["newsletter"]
        from newsletter.core.migrate import upgrade

        upgrade(url)
        client = app.test_client()
        run = time.strftime("%H%M%S")
        events = [
            [
                {
                    "event_id": f"{run}-{r}-{n}",
                    "kind": "order_delayed",
                    "email": f"c{r}x{n}@example.com",
                    "order_id": f"A-{r}-{n}",
                    "new_date": "2026-12-24",
                    "reason": "the supplier is late",
                }
                for n in range(args.batch)
            ]
            for r in range(args.requests)
        ]
        customers = [
            [
                {"email": f"c{r}x{n}@example.com", "orders_count": 2, "lifetime_value": "80.00"}
                for n in range(args.batch)
            ]
            for r in range(args.requests)
        ]
        events_rate = rate(client, "/api/events", events)
        customers_rate = rate(client, "/api/customers", customers)
        retry_rate = rate(client, "/api/events", events)  # every event again: answered, nothing sent
        runtime.redis.flushdb()
        runtime.engine.dispose()
    dialect = url.split(":", 1)[0]
    print(f"{dialect}, {args.requests} requests of {args.batch}:")
    print(f"  POST /api/events     {events_rate:8.0f} events/s into the outbox (one email each)")
    print(f"  POST /api/events     {retry_rate:8.0f} events/s retried (answered again, nothing sent)")
    print(f"  POST /api/customers  {customers_rate:8.0f} rows/s (reference, same run)")


if __name__ == "__main__":
    main()
