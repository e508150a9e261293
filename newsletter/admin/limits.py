"""Sign-in throttling: failures counted in Redis per account and per IP address, with a lock-out.

Each failure increments two counters that expire ``ADMIN_LOCKOUT_MINUTES`` after the first of them;
the one that reaches its limit is given the full lock-out again from that moment. While either is
at its limit nothing is checked, not even a right password. Unlike the signup limits this fails
closed: without Redis nobody signs in (the command line still works), since failing open would hand
an unlimited guessing rate to whoever can make Redis slow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis

from newsletter.core.config import Settings


@dataclass(frozen=True)
class Throttle:
    conn: redis.Redis
    settings: Settings

    def _keys(self, email: str, ip: str) -> dict[str, int]:
        account = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]
        return {
            f"nl:admin:login-fail:account:{account}": self.settings.admin_login_failures,
            f"nl:admin:login-fail:ip:{ip}": self.settings.admin_login_ip_failures,
        }

    def locked_for(self, email: str, ip: str) -> int:
        """Seconds until a sign-in of this account from this address is looked at again (0: now)."""
        keys = self._keys(email, ip)
        pipe = self.conn.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.ttl(key)
        values = pipe.execute()
        waits = [
            max(int(ttl), 1)
            for (key, limit), count, ttl in zip(keys.items(), values[::2], values[1::2], strict=True)
            if count is not None and int(count) >= limit
        ]
        return max(waits, default=0)

    def failed(self, email: str, ip: str) -> None:
        window = self.settings.admin_lockout_minutes * 60
        keys = self._keys(email, ip)
        pipe = self.conn.pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
        counts = pipe.execute()[::2]
        for (key, limit), count in zip(keys.items(), counts, strict=True):
            if int(count) >= limit:
                self.conn.expire(key, window)  # locked: the full lock-out from this failure on

    def succeeded(self, email: str, ip: str) -> None:
        """The account's failures are forgotten; the address's stay (it may be guessing at others)."""
        self.conn.delete(next(iter(self._keys(email, ip))))
