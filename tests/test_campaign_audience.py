"""The audience language: parse errors with columns, and compiled SQL on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from newsletter.campaigns.audience import AudienceError, audience_sql, check, parse
from newsletter.campaigns.waves import audience_columns
from newsletter.models import Customer, Subscriber
from newsletter.models.subscribers import address_hash

NOW = datetime(2026, 11, 23, 12, 0)


@pytest.mark.parametrize(
    "expr, column, message",
    [
        ("", 1, "empty audience"),
        ("tier = 'gold'", 6, "use == to compare"),
        ("lifetime >= 500", 1, "unknown field 'lifetime'"),
        ("lifetime_value >= 'a lot'", 19, "lifetime_value is a number"),
        ("tier in ['gold', 'vip'", 23, "expected ',' or ']'"),
        ("(all or tier == 'x'", 20, "expected ')'"),
        ("last_order_at > 90d", 17, "a duration needs now"),
        ("last_order_at > now - 90", 23, "expected a duration"),
        ("orders_count >= 3 and", 22, "expected a field"),
        ("tier == 'gold' xor all", 16, "expected and, or or the end"),
        ("tier < 'gold'", 6, "< compares numbers and times"),
        ("tier == 'gold", 9, "unterminated string"),
        ("__import__('os')", 1, "unknown field '__import__'"),
        ("attributes.age > now", 18, "attributes cannot be compared with now"),
    ],
)
def test_errors_point_at_the_column(expr, column, message):
    with pytest.raises(AudienceError) as info:
        check(expr)
    assert info.value.column == column
    assert message in info.value.message


def test_the_grammar():
    for expr in [
        "all",
        "lifetime_value >= 500 and orders_count >= 3",
        'tier in ["gold", "vip"]',
        "last_order_at > now - 90d",
        "not (tier == 'gold' or attributes.pet == 'dog') and orders_count != 0",
        "tier not in ['basic'] or attributes.newsletter_score >= 0.5 or attributes.vip == true",
    ]:
        parse(expr)


@pytest.fixture
def people(runtime, make_subscriber):
    """Subscribers with and without customer rows; returns a function evaluating an audience."""
    customers = {
        "gold@example.com": dict(tier="gold", lifetime_value=Decimal("120.00"), orders_count=2, days=10),
        "big@example.com": dict(tier="basic", lifetime_value=Decimal("750.50"), orders_count=9, days=200),
        "new@example.com": dict(tier=None, lifetime_value=Decimal("0"), orders_count=0, days=None),
        "dog@example.com": dict(tier="vip", lifetime_value=Decimal("499.99"), orders_count=3, days=30),
    }
    attributes = {
        "dog@example.com": {"pet": "dog", "score": 0.9, "vip": True},
        "big@example.com": {"score": 0.2},
    }
    for address in [*customers, "nocustomer@example.com"]:
        make_subscriber(address)
    with runtime.sessions() as session:
        for address, data in customers.items():
            days = data.pop("days")
            session.add(
                Customer(
                    email_hash=address_hash(address),
                    last_order_at=NOW - timedelta(days=days) if days is not None else None,
                    attributes=attributes.get(address, {}),
                    **data,
                )
            )
        session.commit()

    def matching(expr: str) -> set[str]:
        condition = audience_sql(expr, audience_columns(), Customer.attributes, NOW)
        query = (
            select(Subscriber.email)
            .outerjoin(Customer, Customer.email_hash == Subscriber.email_hash)
            .where(condition)
        )
        with runtime.sessions() as session:
            return {email.split("@")[0] for email in session.scalars(query)}

    return matching


def test_audiences_compile_on_both_databases(people):
    assert people("all") == {"gold", "big", "new", "dog", "nocustomer"}
    assert people('tier in ["gold", "vip"] or lifetime_value >= 500') == {"gold", "big", "dog"}
    assert people("lifetime_value >= 500 and orders_count >= 3") == {"big"}
    assert people("lifetime_value >= 499.99") == {"big", "dog"}
    assert people("last_order_at > now - 90d") == {"gold", "dog"}
    assert people("last_order_at <= now - 12w") == {"big"}
    assert people("orders_count == 0") == {"new"}
    # missing customer rows and NULL columns never match a comparison; not turns that around
    assert people("tier != 'gold'") == {"big", "dog"}
    assert people("not tier == 'gold'") == {"big", "new", "dog", "nocustomer"}
    assert people("tier not in ['gold', 'vip']") == {"big"}
    assert people("not (tier == 'gold' or lifetime_value >= 500)") == {"new", "dog", "nocustomer"}


def test_free_form_attributes_on_both_databases(people):
    assert people("attributes.pet == 'dog'") == {"dog"}
    assert people("attributes.pet in ['cat', 'dog']") == {"dog"}
    assert people("attributes.score >= 0.5") == {"dog"}
    assert people("attributes.score < 0.5") == {"big"}
    assert people("attributes.vip == true") == {"dog"}
    assert people("not attributes.pet == 'dog'") == {"gold", "big", "new", "nocustomer"}


def test_values_are_bound_never_spliced(people):
    # a quote inside a string is data, not SQL
    assert people('tier == "gold\' OR 1=1 --"') == set()
