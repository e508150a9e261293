"""The partner API's rate limit, per partner (the daily invitation cap: subscribers/partner_cap.py).

The count lives in Redis (like subscribers/limits.py) but fails *closed*: the API already
refuses without Redis (replay protection), and a partner's machine is no signup to lose.
"""

from __future__ import annotations

import redis

from newsletter.partners.signing import RequestRefused

#: fixed window per partner; INCR, first hit sets the expiry; answers the count and the time left
#: in milliseconds (TTL rounds to the nearest second: a caller waiting that long could come early)
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}
"""


def check_partner_api(conn: redis.Redis, partner_id: str, rate: tuple[int, int]) -> None:
    """Count one authenticated request; RequestRefused 429 (with Retry-After) beyond the limit, 503
    without Redis."""
    limit, window = rate
    try:
        count, ttl = conn.register_script(_HIT)(keys=[f"nl:limit:partner-api:{partner_id}"], args=[window])
    except redis.RedisError:
        raise RequestRefused("the rate limit is unavailable; try again later", status=503) from None
    if int(count) > limit:
        wait = -(-int(ttl) // 1000) if int(ttl) > 0 else window  # whole seconds, rounded up
        raise RequestRefused(
            f"too many requests: at most {limit} per {window} seconds (PARTNER_API_RATE_LIMIT)",
            status=429,
            retry_after=wait,
        )
