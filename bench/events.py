"""POST /api/events throughput: store events/s into the outbox, next to POST /api/customers rows/s.

    python bench/events.py [--batch 100] [--requests 20] [--singles 200]
                           [--database-url URL] [--redis-url URL]

Drives the app through Flask's test client (no HTTP server: the figure is the engine's own
cost per event: validation, the store_events and outbox rows in one transaction, and the RQ
jobs of its emails, enqueued together after the commit). Measured twice: ``--requests``
batches of ``--batch`` events, and ``--singles`` requests of one event each. The reference,
measured in the same run on the same database, is POST /api/customers with the same number
of records per request. Jobs are left in Redis unsent; the Redis database given is flushed
at the end.
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


def event(run: str, part: str, r: int, n: int) -> dict:
    return {
        "event_id": f"{run}{part}-{r}-{n}",
        "kind": "order_delayed",
        "email": f"{part}{r}x{n}@example.com",
        "order_id": f"A-{r}-{n}",
        "new_date": "2026-12-24",
        "reason": "the supplier is late",
    }


def customer(part: str, r: int, n: int) -> dict:
    return {"email": f"{part}{r}x{n}@example.com", "orders_count": 2, "lifetime_value": "80.00"}


def rates(client, run: str, part: str, requests: int, size: int) -> tuple[float, float, float]:
    """Events/s, retried events/s and customer rows/s, ``requests`` bodies of ``size`` each
    (a size of 1 POSTs the event alone, as a JSON object)."""
    events = [[event(run, part, r, n) for n in range(size)] for r in range(requests)]
    bodies = [batch[0] for batch in events] if size == 1 else events
    customers = [[customer(part, r, n) for n in range(size)] for r in range(requests)]
    events_rate = rate(client, "/api/events", bodies)
    customers_rate = rate(client, "/api/customers", customers)
    retry_rate = rate(client, "/api/events", bodies)  # every event again: answered, nothing sent
    return events_rate, retry_rate, customers_rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--singles", type=int, default=200, help="requests of one event each")
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
        batched = rates(client, run, "b", args.requests, args.batch)
        single = rates(client, run, "s", args.singles, 1)
        runtime.redis.flushdb()
        runtime.engine.dispose()
    dialect = url.split(":", 1)[0]
    print(f"{dialect}: {args.requests} requests of {args.batch}, {args.singles} of one")
    print(f"  {'':22} {'batch of ' + str(args.batch):>12} {'single':>8}")
    for label, index, unit in (
        ("POST /api/events", 0, "events/s into the outbox (one email each)"),
        ("POST /api/events", 1, "events/s retried (answered again, nothing sent)"),
        ("POST /api/customers", 2, "rows/s (reference, same run)"),
    ):
        print(f"  {label:22} {batched[index]:12.0f} {single[index]:8.0f}  {unit}")


if __name__ == "__main__":
    main()
