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
from newsletter.store_events.schema import SCHEMA
from newsletter.subscribers import order_invitation
from newsletter.subscribers.transactional import store_address_suppressed

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
    if not found and isinstance(event, dict):
        try:
            normalize_address(event["email"])
        except InvalidAddress as exc:
            found.append(f"events[{index}].email: {exc}")
    return list(dict.fromkeys(found))


def validate(events: list[Any]) -> None:
    problems = [p for index, event in enumerate(events) for p in problems_of(index, event)]
    if problems:
        raise BadEvents(problems)


def apply(
    session: Session, settings: Settings, events: list[dict[str, Any]], dispatch: Callable[[int], object]
) -> list[dict]:
    """Validate, then record every new event and its email in the session's transaction (the caller
    commits); a retried event id gets its first answer back and sends nothing."""
    validate(events)
    for attempt in range(3):
        try:
            return _apply(session, settings, events, dispatch)
        except IntegrityError:  # another request stored one of these ids meanwhile: it is a retry now
            session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _apply(session: Session, settings: Settings, events: list[dict[str, Any]], dispatch) -> list[dict]:
    ids = {e["event_id"] for e in events}
    known = {
        row.event_id: row.result
        for row in session.execute(
            select(StoreEvent.event_id, StoreEvent.result).where(StoreEvent.event_id.in_(ids))
        )
    }
    results = []
    for event in events:
        if event["event_id"] in known:
            results.append(known[event["event_id"]])
            continue
        result = _record(session, settings, event, dispatch)
        known[event["event_id"]] = result
        results.append(result)
    session.flush()
    return results


def _record(session: Session, settings: Settings, event: dict[str, Any], dispatch) -> dict:
    email = normalize_address(event["email"])
    kind = event["kind"]
    if kind in RECORD_ONLY:
        status = "recorded"
    elif store_address_suppressed(session, email):
        status = "suppressed"  # hard bounce or complaint: never mailed, whatever the event
    else:
        status = "queued"
    result = {"event_id": event["event_id"], "kind": kind, "status": status}
    row_id = session.execute(
        insert(StoreEvent)
        .values(
            event_id=event["event_id"],
            kind=kind,
            email=email,
            payload=event,
            result=result,
            created_at=clock.now(),
        )
        .returning(StoreEvent.id)
    ).scalar_one()
    if status == "queued" and kind == "order_placed":
        # the thank-you finds its invitation (if any) by this event's row when it is built
        order_invitation.offer(session, settings, row_id, email, event)
    if status == "queued":
        outbox_id = session.execute(
            insert(OutboxEmail)
            .values(
                kind=OutboxKind(kind),
                store_event_id=row_id,
                created_at=clock.now(),
                attempts=0,
                # no mailbox_hash: store mail must not count towards the signup confirmations' cap
            )
            .returning(OutboxEmail.id)
        ).scalar_one()
        on_commit(session, lambda: dispatch(outbox_id))
    return result
