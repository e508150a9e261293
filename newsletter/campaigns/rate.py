"""The send rate across every worker (``SEND_RATE``): a shared per-second counter in Redis."""

from __future__ import annotations

import time

import redis


class RateLimiter:
    """Messages per second across every worker: a shared per-second counter in Redis."""

    def __init__(self, conn: redis.Redis, per_second: int, chunk: int = 10):
        self.conn, self.per_second, self.chunk = conn, per_second, chunk
        self.tokens = 0

    def take(self) -> None:
        if not self.per_second:
            return
        while self.tokens == 0:
            second = int(time.time())
            key = f"nl:rate:{second}"
            pipe = self.conn.pipeline(transaction=False)
            pipe.incrby(key, self.chunk)
            pipe.expire(key, 5)
            used, _ = pipe.execute()
            granted = max(0, min(self.chunk, self.per_second - (used - self.chunk)))
            if granted:
                self.tokens = granted
            else:
                time.sleep(max(0.0, second + 1 - time.time()))
        self.tokens -= 1
