"""Personal reward codes: pools the store made, generated codes, and handing one to each delivery.

A pool code is assigned to its delivery row in the transaction that decides the batch, before
any message is sent (``reward_codes.delivery_id`` is unique, so a code goes to one message and a
message holds one code); a retried row keeps the code it has. Generated codes are
``PREFIX-<delivery id>-<YYYYMMDD expiry>-<mac>``, ``mac`` the first 16 base32 characters of
HMAC-SHA256(REWARD_CODE_SECRET, ``PREFIX-<delivery id>-<YYYYMMDD>``) (docs/store-mail.md).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns.frozen import FrozenReward
from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.models import Delivery, DeliveryState, RewardCode

POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_CODE = 200
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_GENERATED = re.compile(
    r"^(?P<prefix>[A-Z0-9]+)-(?P<delivery>[0-9]+)-(?P<expires>[0-9]{8})-(?P<mac>[A-Z2-7]{16})$"
)


# --- pools ----------------------------------------------------------------------------------


@dataclass
class ImportReport:
    added: int = 0
    blank: int = 0
    #: (line, message): duplicates in the file or already in the pool (skipped), or bad codes
    duplicates: list[tuple[int, str]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)


def read_codes(text: str) -> tuple[list[tuple[int, str]], ImportReport]:
    """(line, code) of a file: one code per line, or a CSV with a ``code`` column."""
    report = ImportReport()
    rows = list(csv.reader(io.StringIO(text)))
    column, start = 0, 0
    if rows and "code" in [cell.strip().lower() for cell in rows[0]]:
        column = [cell.strip().lower() for cell in rows[0]].index("code")
        start = 1
    codes, seen = [], {}
    for number, row in enumerate(rows[start:], start=start + 1):
        code = row[column].strip() if len(row) > column else ""
        if not code:
            report.blank += 1
        elif len(code) > MAX_CODE or _CONTROL.search(code):
            report.bad.append((number, f"not a code (at most {MAX_CODE} printable characters)"))
        elif code in seen:
            report.duplicates.append((number, f"duplicate of line {seen[code]}: {code}"))
        else:
            seen[code] = number
            codes.append((number, code))
    return codes, report


def import_codes(session: Session, pool: str, text: str) -> ImportReport:
    """Add a file's codes to ``pool``; duplicates and blanks are reported and skipped, a bad code
    refuses the whole file (nothing written). The caller commits once: all or nothing."""
    codes, report = read_codes(text)
    if report.bad:
        return report
    existing = set()
    values = [code for _, code in codes]
    for i in range(0, len(values), 500):
        existing.update(
            session.scalars(
                select(RewardCode.code).where(
                    RewardCode.pool == pool, RewardCode.code.in_(values[i : i + 500])
                )
            )
        )
    new = []
    for number, code in codes:
        if code in existing:
            report.duplicates.append((number, f"already in pool {pool}: {code}"))
        else:
            new.append({"pool": pool, "code": code})
    if new:
        session.execute(RewardCode.__table__.insert(), [dict(row, loaded_at=clock.now()) for row in new])
    report.added = len(new)
    return report


@dataclass(frozen=True)
class PoolCounts:
    pool: str
    total: int
    assigned: int
    redeemed: int

    @property
    def free(self) -> int:
        return self.total - self.assigned


def pools(session: Session) -> list[PoolCounts]:
    rows = session.execute(
        select(
            RewardCode.pool,
            func.count(),
            func.count(RewardCode.delivery_id),
            func.count(RewardCode.redeemed_at),
        )
        .group_by(RewardCode.pool)
        .order_by(RewardCode.pool)
    )
    return [PoolCounts(*row) for row in rows]


def free_codes(session: Session, pool: str) -> int:
    return session.scalar(
        select(func.count()).where(RewardCode.pool == pool, RewardCode.delivery_id.is_(None))
    )


# --- generated codes ------------------------------------------------------------------------


def secret(settings: Settings) -> bytes:
    """REWARD_CODE_SECRET, or a key derived from SECRET_KEY (then only the API can verify)."""
    if settings.reward_code_secret:
        return settings.reward_code_secret.encode("utf-8")
    return hmac.new(settings.secret_key.encode("utf-8"), b"newsletter.reward-code", "sha256").digest()


def _mac(settings: Settings, body: str) -> str:
    digest = hmac.new(secret(settings), body.encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:16]


def make_code(settings: Settings, prefix: str, delivery_id: int, expires: date) -> str:
    """The code of one delivery: the same inputs give the same code (a retry sends the same one)."""
    body = f"{prefix}-{delivery_id}-{expires:%Y%m%d}"
    return f"{body}-{_mac(settings, body)}"


@dataclass(frozen=True)
class Check:
    status: str  #: "valid", "expired", "redeemed" (check_code only) or "unknown"
    expires: date | None = None
    delivery_id: int | None = None


def verify_code(settings: Settings, code: str, today: date) -> Check:
    """Genuine and unexpired? A code is valid through its expiry day (UTC)."""
    match = _GENERATED.match(code.strip().upper()) if isinstance(code, str) else None
    if not match:
        return Check("unknown")
    body = code.strip().upper().rsplit("-", 1)[0]
    if not hmac.compare_digest(_mac(settings, body), match.group("mac")):
        return Check("unknown")
    try:
        expires = datetime.strptime(match.group("expires"), "%Y%m%d").date()
    except ValueError:
        return Check("unknown")
    delivery_id = int(match.group("delivery"))
    return Check("expired" if expires < today else "valid", expires, delivery_id)


def _could_be_code(code: str) -> bool:
    """What an import would accept; a NUL byte would not even reach PostgreSQL as text."""
    return bool(code) and len(code) <= MAX_CODE and not _CONTROL.search(code)


#: a message in these states may have reached its person: the code it carried is out there
MAILED = (DeliveryState.SENT, DeliveryState.UNCERTAIN)


def check_code(session: Session, settings: Settings, code: str, today: date) -> Check:
    """What the store may do with ``code`` (GET /api/codes/verify): a pool or a generated code.

    A pool code is valid once the message it was assigned to was sent (or may have been:
    uncertain) and until it is redeemed; a free code, or one whose message never left, is
    unknown: nobody was given it. A generated code is checked by its HMAC and expiry, then
    answers redeemed if the store already reported it used.
    """
    code = code.strip()
    if not _could_be_code(code):
        return Check("unknown")
    pooled = session.execute(
        select(RewardCode.redeemed_at, Delivery.state)
        .outerjoin(Delivery, Delivery.id == RewardCode.delivery_id)
        .where(RewardCode.code == code)
    ).all()
    if pooled:
        mailed = [redeemed_at for redeemed_at, state in pooled if state in MAILED]
        if not mailed:
            return Check("unknown")
        # the same text in two pools: valid while any person holding it may still use it
        return Check("valid" if any(at is None for at in mailed) else "redeemed")
    check = verify_code(settings, code, today)
    if check.status == "unknown":
        return check
    redeemed = session.scalar(
        select(Delivery.reward_redeemed_at).where(
            Delivery.id == check.delivery_id, Delivery.reward_code == code.upper()
        )
    )
    return Check("redeemed", check.expires, check.delivery_id) if redeemed else check


def expiry_of(code: str) -> date | None:
    """The expiry day written in a generated code (None for a pool code)."""
    match = _GENERATED.match(code)
    try:
        return datetime.strptime(match.group("expires"), "%Y%m%d").date() if match else None
    except ValueError:
        return None


# --- redemptions ----------------------------------------------------------------------------


def redeem(session: Session, settings: Settings, code: str, now: datetime) -> str:
    """The store used ``code``: "redeemed", "already redeemed" or "unknown" (idempotent)."""
    code = code.strip()
    if not _could_be_code(code):
        return "unknown"
    rows = session.execute(
        update(RewardCode)
        .where(RewardCode.code == code, RewardCode.delivery_id.is_not(None), RewardCode.redeemed_at.is_(None))
        .values(redeemed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if rows:
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(select(RewardCode.delivery_id).where(RewardCode.code == code)),
                Delivery.reward_redeemed_at.is_(None),
            )
            .values(reward_redeemed_at=now)
            .execution_options(synchronize_session=False)
        )
        return "redeemed"
    if session.scalar(
        select(RewardCode.id).where(RewardCode.code == code, RewardCode.delivery_id.is_not(None))
    ):
        return "already redeemed"
    check = verify_code(settings, code, now.date())
    if check.status == "unknown" or check.delivery_id is None:
        return "unknown"
    delivery = session.get(Delivery, check.delivery_id)
    if delivery is None or delivery.reward_code != code.upper():
        return "unknown"
    rows = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.reward_redeemed_at.is_(None))
        .values(reward_redeemed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return "redeemed" if rows else "already redeemed"


# --- assignment, before sending -----------------------------------------------------------


def assign(
    session: Session, settings: Settings, reward: FrozenReward, recipients: list, now: datetime
) -> tuple[dict[int, str], list]:
    """Give each recipient its code, in the caller's transaction: (delivery id -> code, those left without).

    A row that already holds a code (a retried batch) keeps it. Pool codes are taken with
    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent batches take different codes without
    waiting; the ``delivery_id IS NULL`` condition and its unique constraint make a double
    assignment impossible whatever the database.
    """
    ids = [r.delivery_id for r in recipients]
    held = dict(session.execute(select(Delivery.id, Delivery.reward_code).where(Delivery.id.in_(ids))).all())
    codes = {i: c for i, c in held.items() if c}
    wanting = [r for r in recipients if r.delivery_id not in codes]
    if reward.pool is None:
        expires = (now + timedelta(days=reward.expires_in_days)).date()
        for r in wanting:
            codes[r.delivery_id] = make_code(settings, reward.prefix, r.delivery_id, expires)
    else:
        # a pool code assigned to the row before its reward_code was written (cannot happen in
        # one transaction, but cheap to honour)
        codes.update(
            session.execute(
                select(RewardCode.delivery_id, RewardCode.code).where(
                    RewardCode.delivery_id.in_([r.delivery_id for r in wanting])
                )
            ).all()
        )
        wanting = [r for r in wanting if r.delivery_id not in codes]
        while wanting:
            free = session.execute(
                select(RewardCode.id, RewardCode.code)
                .where(RewardCode.pool == reward.pool, RewardCode.delivery_id.is_(None))
                .order_by(RewardCode.id)
                .limit(len(wanting))
                .with_for_update(skip_locked=True)
            ).all()
            if not free:
                break
            left = []
            for recipient, (code_id, code) in zip(wanting, free, strict=False):
                taken = session.execute(
                    update(RewardCode)
                    .where(RewardCode.id == code_id, RewardCode.delivery_id.is_(None))
                    .values(delivery_id=recipient.delivery_id, assigned_at=now)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if taken:
                    codes[recipient.delivery_id] = code
                else:  # another batch took it between our SELECT and UPDATE (SQLite): try again
                    left.append(recipient)
            wanting = left + wanting[len(free) :]
    for delivery_id, code in codes.items():
        if held.get(delivery_id) != code:
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(reward_code=code)
                .execution_options(synchronize_session=False)
            )
    return codes, [r for r in recipients if r.delivery_id not in codes]
