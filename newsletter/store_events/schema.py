"""The JSON Schema of one store event (docs/store-mail.md); ``newsletter events schema`` prints it."""

from __future__ import annotations

_TEXT = {"type": "string", "minLength": 1, "maxLength": 500}
_URL = {"type": "string", "pattern": "^https?://", "maxLength": 2000}
_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "YYYY-MM-DD"}

#: per kind: the fields it needs (``required``) and what each may hold
KINDS: dict[str, dict] = {
    "order_placed": {"required": ["order_id"]},
    "order_shipped": {"required": ["order_id"]},
    "order_delayed": {"required": ["order_id", "new_date", "reason"]},
    "order_cancelled": {"required": ["order_id"]},
    "item_out_of_stock": {"required": ["order_id", "item", "alternatives"]},
    "back_in_stock": {"required": ["item", "url"]},
    "back_in_stock_request": {"required": ["item", "evidence"]},
}

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "store event",
    "type": "object",
    "required": ["event_id", "kind", "email"],
    "properties": {
        "event_id": {"type": "string", "minLength": 1, "maxLength": 200, "description": "the store's id"},
        "kind": {"enum": sorted(KINDS)},
        "email": {"type": "string", "minLength": 3, "maxLength": 320},
        "first_name": {"type": "string", "maxLength": 100},
        "first_order": {
            "type": "boolean",
            "description": "order_placed: false if the store knows this is not the customer's first order",
        },
        "order_id": {"type": "string", "minLength": 1, "maxLength": 100},
        "order_url": _URL,
        "tracking_url": _URL,
        "new_date": _DATE,
        "reason": _TEXT,
        "item": _TEXT,
        "url": _URL,
        "alternatives": {
            "type": "array",
            "maxItems": 20,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _TEXT, "url": _URL},
            },
        },
        "evidence": {
            "type": "object",
            "required": ["ip", "user_agent", "source", "wording"],
            "properties": {
                "ip": {"type": "string", "minLength": 2, "maxLength": 45},
                "user_agent": {"type": "string", "maxLength": 500},
                "source": _TEXT,
                "wording": {"type": "string", "minLength": 1, "maxLength": 2000},
            },
        },
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": kind}}}, "then": rules} for kind, rules in KINDS.items()
    ],
}
