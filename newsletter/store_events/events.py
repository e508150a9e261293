"""Validate and apply store events: all of a batch or none, each event id once, mail after commit."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.db import on_commit
from newsletter.mail.addresses import InvalidAddress, normalize_address
from newsletter.models import OutboxEmail, OutboxKind, StoreEvent
from newsletter.store_events.schema import KINDS, SCHEMA
from newsletter.subscribers import order_invitation
from newsletter.subscribers.transactional import store_addresses_suppressed

#: kinds that only record something (a request to be told); every other kind mails the customer
RECORD_ONLY = frozenset({"back_in_stock_request"})


class BadEvents(ValueError):
    """One line per bad event: ``events[3].new_date: required``."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Batch:
    events: list[dict[str, Any]]
    single: bool  #: the body was one object: answer one result, not a list


def parse_body(body: bytes) -> Batch:
    """A JSON object, a JSON array, or JSON Lines (one object per line)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvents(["the body is not UTF-8"]) from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise BadEvents(["the body nests too deeply"]) from None
    except ValueError:
        return Batch(parse_lines(text.splitlines()), single=False)
    if isinstance(data, dict):
        return Batch([data], single=True)
    if isinstance(data, list):
        return Batch(data, single=False)
    raise BadEvents(["the body must be a JSON object, a JSON array of them, or JSON Lines"])


def parse_lines(lines: list[str]) -> list[Any]:
    events, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except (ValueError, RecursionError):
            problems.append(f"line {number}: not JSON")
    if problems:
        raise BadEvents(problems)
    return events


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    return Draft202012Validator(SCHEMA)


@lru_cache(maxsize=1)
def kind_validators() -> dict[str, Draft202012Validator]:
    """Per kind, the schema with only that kind's ``allOf`` branch: the same verdict for an
    object of that kind, a third of the work (jsonschema tries every branch's ``if``)."""
    base = {key: value for key, value in SCHEMA.items() if key != "allOf"}
    return {kind: Draft202012Validator({**base, "allOf": [rules]}) for kind, rules in KINDS.items()}


def problems_of(index: int, event: Any) -> list[str]:
    """What is wrong with one event, each naming its field (``events[3].new_date: required``)."""
    found = []
    for error in sorted(validator().iter_errors(event), key=lambda e: list(e.absolute_path)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        if error.validator == "required":
            missing = [f for f in error.validator_value if f not in (error.instance or {})]
            found += [f"events[{index}]{where}.{field}: required" for field in missing]
        elif error.validator in ("if", "allOf"):
            continue  # the "then" branch's own errors are reported
        else:
            found.append(f"events[{index}]{where or ''}: {error.message[:200]}")
    return list(dict.fromkeys(found))


def validate(events: list[Any]) -> list[str]:
    """Each event's address, normalized; or BadEvents naming every problem of every event."""
    problems, addresses = [], []
    for index, event in enumerate(events):
        kind = event.get("kind") if isinstance(event, dict) else None
        by_kind = kind_validators().get(kind) if isinstance(kind, str) else None
        found = [] if by_kind is not None and by_kind.is_valid(event) else problems_of(index, event)
        if not found:
            try:
                addresses.append(normalize_address(event["email"]))
            except InvalidAddress as exc:
                found.append(f"events[{index}].email: {exc}")
        problems += found
    if problems:
        raise BadEvents(problems)
    return addresses


def apply(
    session: Session,
    settings: Settings,
    events: list[dict[str, Any]],
    dispatch: Callable[[list[int]], object],
) -> list[dict]:
    """Validate, then record every new event and its email in the session's transaction (the caller
    commits; ``dispatch`` gets the new outbox ids after it); a retried event id gets its first
    answer back and sends nothing."""
    addresses = validate(events)
    for attempt in range(3):
        try:
            return _apply(session, settings, events, addresses, dispatch)
        except IntegrityError:  # another request stored one of these ids meanwhile: it is a retry now
            session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _apply(
    session: Session, settings: Settings, events: list[dict[str, Any]], addresses: list[str], dispatch
) -> list[dict]:
    ids = {e["event_id"] for e in events}
    known = {
        row.event_id: row.result
        for row in session.execute(
            select(StoreEvent.event_id, StoreEvent.result).where(StoreEvent.event_id.in_(ids))
        )
    }
    new = {}  # the first event of each id not stored yet, in the batch's order, with its address
    for event, email in zip(events, addresses, strict=True):
        if event["event_id"] not in known:
            new.setdefault(event["event_id"], (event, email))
    if new:
        known.update(_record(session, settings, list(new.values()), dispatch))
    return [known[event["event_id"]] for event in events]


def _record(
    session: Session, settings: Settings, events: list[tuple[dict[str, Any], str]], dispatch
) -> dict[str, dict]:
    """Store these new events (with their addresses) and their emails: three statements for the
    whole batch, not three per event. Their results, by event id."""
    suppressed = store_addresses_suppressed(session, {email for _, email in events})
    now = clock.now()
    rows = []
    for event, email in events:
        kind = event["kind"]
        if kind in RECORD_ONLY:
            status = "recorded"
        elif email in suppressed:
            status = "suppressed"  # hard bounce or complaint: never mailed, whatever the event
        else:
            status = "queued"
        result = {"event_id": event["event_id"], "kind": kind, "status": status}
        rows.append(
            {
                "event_id": event["event_id"],
                "kind": kind,
                "email": email,
                "payload": event,
                "result": result,
                "created_at": now,
            }
        )
    row_ids = session.scalars(
        insert(StoreEvent).returning(StoreEvent.id, sort_by_parameter_order=True),
        rows,
    ).all()
    for row, row_id in zip(rows, row_ids, strict=True):
        if row["kind"] == "order_placed" and row["result"]["status"] == "queued":
            # in id order, so a batch's second first order sees the first; the thank-you finds
            # its invitation (if any) by this event's row when it is built
            order_invitation.offer(session, settings, row_id, row["email"], row["payload"])
    mail = [
        # no mailbox_hash: store mail must not count towards the signup confirmations' cap
        {"kind": OutboxKind(row["kind"]), "store_event_id": row_id, "created_at": now, "attempts": 0}
        for row, row_id in zip(rows, row_ids, strict=True)
        if row["result"]["status"] == "queued"
    ]
    if mail:
        outbox_ids = session.scalars(
            insert(OutboxEmail).returning(OutboxEmail.id, sort_by_parameter_order=True), mail
        ).all()
        on_commit(session, lambda: dispatch(list(outbox_ids)))
    return {row["event_id"]: row["result"] for row in rows}
