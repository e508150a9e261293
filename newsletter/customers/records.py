"""Customer data from the store (orders, lifetime value, tier, free-form attributes), keyed by hash.

Rows come from a CSV file (``newsletter customers import``) or the JSON API; both go through
``parse_record`` and ``CustomerUpserter``. Only the fields a record carries are changed, and
its attributes are merged into the stored ones. The table is keyed by the address hash and only
ever joined to subscribers, so a customer who never subscribed is never mailed because of it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.db import dialect_insert
from newsletter.mail.addresses import InvalidAddress, normalize_address
from newsletter.models import Customer
from newsletter.models.subscribers import address_hash

#: Columns of the customers table a record may set; every other key is a free-form attribute.
FIELDS = ("orders_count", "lifetime_value", "last_order_at", "tier")
#: Keys that name the customer (one of them is required).
KEYS = ("email", "email_hash")
#: Records per INSERT ... ON CONFLICT statement.
BATCH_SIZE = 500
#: Errors kept in a report (all are counted); a wrong file should not fill the memory.
MAX_ERRORS = 1000
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_LENGTH = 500
MAX_LIFETIME_VALUE = Decimal("9999999999.99")  # Numeric(12, 2)

_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadRecord(ValueError):
    """A record cannot be used; the message says why (safe to show to the store)."""


@dataclass
class CustomerRecord:
    """One validated record: the hash, the table fields it sets, the attributes it merges."""

    email_hash: str
    fields: dict[str, Any]
    attributes: dict[str, Any]


@dataclass
class CustomerReport:
    received: int = 0
    created: int = 0
    updated: int = 0
    bad: int = 0
    #: ``(line or index, reason)``, at most MAX_ERRORS of them
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return self.created + self.updated

    def add_error(self, where: int, reason: str) -> None:
        self.bad += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((where, reason))


def parse_datetime(value: str) -> datetime:
    """ISO 8601 to naive UTC; a time without offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRecord(f"not an ISO 8601 date and time: {value[:40]!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _email_hash(record: Mapping[str, Any]) -> str:
    email, hashed = record.get("email"), record.get("email_hash")
    if email not in (None, ""):
        if not isinstance(email, str):
            raise BadRecord("email: expected a string")
        try:
            return address_hash(normalize_address(email))
        except InvalidAddress as exc:
            raise BadRecord(f"email {email[:80]!r}: {exc}") from None
    if hashed not in (None, ""):
        if not isinstance(hashed, str) or not _HEX64.fullmatch(hashed.strip().lower()):
            raise BadRecord("email_hash: expected 64 hex digits (SHA-256 of the lower-cased address)")
        return hashed.strip().lower()
    raise BadRecord("no email (or email_hash)")


def _orders_count(value: Any) -> int:
    if isinstance(value, bool):
        raise BadRecord("orders_count: expected a whole number >= 0")
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"\d{1,9}", value):
            raise BadRecord(f"orders_count: expected a whole number >= 0, got {value[:20]!r}")
        return int(value)
    if not isinstance(value, int) or not 0 <= value < 10**9:
        raise BadRecord("orders_count: expected a whole number >= 0")
    return value


def _lifetime_value(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRecord("lifetime_value: expected a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRecord(f"lifetime_value: expected a number, got {str(value)[:20]!r}") from None
    if not amount.is_finite() or not 0 <= amount <= MAX_LIFETIME_VALUE:
        raise BadRecord(f"lifetime_value: expected a number from 0 to {MAX_LIFETIME_VALUE}")
    return amount.quantize(Decimal("0.01"))


def _no_nul(name: str, value: str) -> str:
    # PostgreSQL stores no NUL in text or JSON; SQLite would, and the two must agree.
    if "\x00" in value:
        raise BadRecord(f"{name}: contains a NUL byte")
    return value


def _field(name: str, value: Any) -> Any:
    if name == "orders_count":
        return _orders_count(value)
    if name == "lifetime_value":
        return _lifetime_value(value)
    if name == "last_order_at":
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadRecord("last_order_at: expected an ISO 8601 string")
        return parse_datetime(value)
    # tier
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > 50:
        raise BadRecord("tier: expected text of at most 50 characters")
    return _no_nul("tier", value.strip()) or None


def _attribute(name: str, value: Any) -> Any:
    if not _ATTRIBUTE_NAME.fullmatch(name):
        raise BadRecord(f"attribute name {name[:40]!r}: use letters, digits and _ (at most 64)")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) <= MAX_ATTRIBUTE_LENGTH:
        return _no_nul(f"attribute {name}", value)
    raise BadRecord(
        f"attribute {name}: expected text (at most {MAX_ATTRIBUTE_LENGTH} characters), a number, "
        "true/false or null"
    )


def parse_record(record: Any, *, blank_is_absent: bool = False) -> CustomerRecord:
    """Validate one record (a CSV row or a JSON object); raise BadRecord with the reason.

    In CSV an empty cell means "no change" (``blank_is_absent``); in JSON a key that is
    absent means "no change" and ``null`` clears ``last_order_at`` or ``tier``.
    """
    if not isinstance(record, Mapping):
        raise BadRecord("expected an object with an email and customer fields")
    email_hash = _email_hash(record)
    fields: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for name, value in record.items():
        if not isinstance(name, str):
            raise BadRecord("keys must be text")
        if name in KEYS or (blank_is_absent and (value is None or value == "")):
            continue
        if name in FIELDS:
            fields[name] = _field(name, value)
        elif name == "attributes" and isinstance(value, Mapping):
            attributes.update({k: _attribute(str(k), v) for k, v in value.items()})
        else:
            attributes[name] = _attribute(name, value)
    if len(attributes) > MAX_ATTRIBUTES:
        raise BadRecord(f"more than {MAX_ATTRIBUTES} attributes")
    return CustomerRecord(email_hash, fields, attributes)


class CustomerUpserter:
    """Collects records and writes them in batches of INSERT ... ON CONFLICT DO UPDATE.

    Works on SQLite and PostgreSQL alike. A batch never holds one hash twice (PostgreSQL
    refuses to update a row twice in one statement): a repeated hash flushes the batch first,
    so the later record wins.
    """

    def __init__(self, session: Session, report: CustomerReport, batch_size: int = BATCH_SIZE):
        self.session = session
        self.report = report
        self.batch_size = batch_size
        self.pending: dict[str, CustomerRecord] = {}

    def add(self, record: CustomerRecord) -> None:
        if record.email_hash in self.pending or len(self.pending) >= self.batch_size:
            self.flush()
        self.pending[record.email_hash] = record

    def flush(self) -> None:
        if not self.pending:
            return
        records, self.pending = list(self.pending.values()), {}
        existing = dict(
            self.session.execute(
                select(Customer.email_hash, Customer.attributes).where(
                    Customer.email_hash.in_([r.email_hash for r in records])
                )
            ).all()
        )
        now = clock.now()
        # One statement per set of changed columns (in a CSV file: one for the whole batch).
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for record in records:
            changed = tuple(sorted(record.fields)) + (("attributes",) if record.attributes else ())
            groups.setdefault(changed, []).append(
                {
                    "email_hash": record.email_hash,
                    "orders_count": record.fields.get("orders_count", 0),
                    "lifetime_value": record.fields.get("lifetime_value", Decimal("0")),
                    "last_order_at": record.fields.get("last_order_at"),
                    "tier": record.fields.get("tier"),
                    "attributes": {**(existing.get(record.email_hash) or {}), **record.attributes},
                    "updated_at": now,
                }
            )
        for changed, rows in groups.items():
            statement = dialect_insert(self.session, Customer)
            statement = statement.on_conflict_do_update(
                index_elements=["email_hash"],
                set_={name: statement.excluded[name] for name in (*changed, "updated_at")},
            )
            self.session.execute(statement, rows)
        self.report.updated += sum(1 for r in records if r.email_hash in existing)
        self.report.created += sum(1 for r in records if r.email_hash not in existing)


def import_records(session: Session, records: Iterable[Any]) -> CustomerReport:
    """Upsert JSON records (the API); errors carry the record's index (from 0)."""
    report = CustomerReport()
    upserter = CustomerUpserter(session, report)
    for index, raw in enumerate(records):
        report.received += 1
        try:
            upserter.add(parse_record(raw))
        except BadRecord as exc:
            report.add_error(index, str(exc))
    upserter.flush()
    return report


def import_csv(session: Session, lines: Iterable[str]) -> CustomerReport:
    """Upsert a CSV file streamed line by line; errors carry the line number.

    Header: ``email`` (or ``email_hash``), any of ``orders_count``, ``lifetime_value``,
    ``last_order_at``, ``tier``; every other column is a free-form attribute.
    """
    report = CustomerReport()
    reader = csv.DictReader(lines)
    known = {*KEYS, *FIELDS}
    # Known columns in any case ("Email"); attribute names are kept as written.
    header = [
        name.strip().lower() if name.strip().lower() in known else name.strip()
        for name in (reader.fieldnames or [])
    ]
    if not set(header) & set(KEYS):
        report.add_error(1, "the header needs an 'email' (or 'email_hash') column")
        return report
    if len(set(header)) != len(header) or "" in header:
        report.add_error(1, "the header has an empty or repeated column name")
        return report
    reader.fieldnames = header
    upserter = CustomerUpserter(session, report)
    for row in reader:
        report.received += 1
        where = reader.line_num  # the row's last line (a quoted cell may span several)
        if None in row:
            report.add_error(where, "more cells than the header has columns")
            continue
        try:
            upserter.add(parse_record(row, blank_is_absent=True))
        except BadRecord as exc:
            report.add_error(where, str(exc))
    upserter.flush()
    return report
