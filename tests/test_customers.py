"""Customer data from the store: CSV import (CLI) and the JSON API, upserted by address hash."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.customers import records as customers
from newsletter.models import Customer
from newsletter.models.subscribers import address_hash
from tests.test_cli import env_for

TOKEN = "store-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def customer(runtime, email: str) -> Customer | None:
    with runtime.sessions() as session:
        return session.scalar(select(Customer).where(Customer.email_hash == address_hash(email)))


def count(runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count(Customer.id)))


def test_csv_import_applies_good_rows_and_reports_bad_ones_by_line(app, runtime, tmp_path):
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "email,orders_count,lifetime_value,last_order_at,tier,favourite_colour\n"
        "Ann@Example.com,3,120.50,2026-10-01T12:30:00+02:00,gold,green\n"
        "not-an-address,1,1,,,\n"
        "bob@example.com,-1,5,,,\n"
        "cid@example.com,2,lots,,,\n"
        "dan@example.com,2,10,yesterday,,\n"
        "eve@example.com,,,,,\n"
        '"fay@example.com",7.5,99.999,2026-09-30,"silver\n",blue\n'  # ends on line 9
        "gus@example.com,1,99.999,2026-09-30,silver,blue\n",
        "utf-8",
    )
    result = CliRunner().invoke(cli, ["customers", "import", str(csv_file)], env=env_for(app))
    assert result.exit_code == 1, result.output  # bad rows: the good ones are applied all the same
    errors = [line for line in result.output.splitlines() if ": line " in line]
    assert [e.split(": line ")[1].split(":")[0] for e in errors] == ["3", "4", "5", "6", "9"]
    assert "orders_count: expected a whole number" in errors[1]
    assert "lifetime_value: expected a number" in errors[2]
    assert "not an ISO 8601 date and time: 'yesterday'" in errors[3]
    assert "customers: 3 applied (3 new, 0 updated), 5 bad rows" in result.output

    ann = customer(runtime, "ann@example.com")
    assert ann.orders_count == 3 and ann.lifetime_value == Decimal("120.50")
    assert ann.last_order_at == datetime(2026, 10, 1, 10, 30)  # naive UTC
    assert ann.tier == "gold" and ann.attributes == {"favourite_colour": "green"}
    eve = customer(runtime, "eve@example.com")  # empty cells: defaults for a new customer
    assert eve.orders_count == 0 and eve.lifetime_value == 0 and eve.attributes == {}
    gus = customer(runtime, "gus@example.com")
    assert gus.lifetime_value == Decimal("100.00") and gus.last_order_at == datetime(2026, 9, 30)


def test_csv_line_numbers(runtime):
    lines = [
        "Email,Orders_Count\n",
        "a@example.com,1\n",
        "\n",  # blank lines are skipped but counted
        "bad,1\n",
        'b@example.com,"2\n',
        '"\n',  # a quoted cell over two lines ("2\n", fine once stripped): the row ends on line 6
        "c@example.com,1,extra\n",
        "d@example.com,x\n",
    ]
    with runtime.sessions() as session:
        report = customers.import_csv(session, lines)
        session.commit()
    assert [line for line, _ in report.errors] == [4, 7, 8]
    assert "more cells than the header" in report.errors[1][1]
    assert report.created == 2 and report.bad == 3 and report.received == 5


def test_csv_repeat_upserts_only_the_columns_given_and_merges_attributes(app, runtime, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text(
        "email,orders_count,lifetime_value,tier,size\nann@example.com,3,120,gold,M\nbob@example.com,1,10,,S\n"
    )
    second = tmp_path / "second.csv"
    second.write_text("email,orders_count,city\nANN@example.com,4,Lyon\nann@example.com,5,\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["customers", "import", str(first)], env=env_for(app)).exit_code == 0
    result = runner.invoke(cli, ["customers", "import", str(second)], env=env_for(app))
    assert "customers: 2 applied (0 new, 2 updated), 0 bad rows" in result.output, result.output

    ann = customer(runtime, "ann@example.com")
    # The later row of the same address wins; columns not in the file are kept.
    assert ann.orders_count == 5 and ann.lifetime_value == Decimal("120.00") and ann.tier == "gold"
    assert ann.attributes == {"size": "M", "city": "Lyon"}
    assert count(runtime) == 2


def test_csv_needs_an_email_column(app, tmp_path):
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("mail,orders_count\nann@example.com,1\n")
    result = CliRunner().invoke(cli, ["customers", "import", str(csv_file)], env=env_for(app))
    assert result.exit_code == 1
    assert "line 1: the header needs an 'email' (or 'email_hash') column" in result.output


def test_batches_larger_than_one_statement(runtime):
    lines = ["email,orders_count\n"] + [f"user{i}@example.com,{i}\n" for i in range(1203)]
    with runtime.sessions() as session:
        report = customers.import_csv(session, lines)
        session.commit()
    assert report.created == 1203 and report.bad == 0
    assert count(runtime) == 1203
    assert customer(runtime, "user1202@example.com").orders_count == 1202


# --- the API --------------------------------------------------------------------------------


def test_api_is_off_without_a_token(client):
    response = client.post("/api/customers", json=[{"email": "ann@example.com"}], headers=AUTH)
    assert response.status_code == 404
    assert "NEWSLETTER_API_TOKEN" in response.get_json()["error"]


def test_api_token_is_checked(make_app):
    client = make_app(API_TOKEN=TOKEN).test_client()
    body = [{"email": "ann@example.com"}]
    missing = client.post("/api/customers", json=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.get_json()["error"]
    wrong = client.post("/api/customers", json=body, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 403 and wrong.get_json() == {"error": "wrong API token"}
    basic = client.post("/api/customers", json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert client.post("/api/customers", json=body, headers=AUTH).status_code == 200


def test_a_short_api_token_is_a_configuration_error(make_app):
    from newsletter.core.config import ConfigError

    with pytest.raises(ConfigError, match="API_TOKEN: expected at least 16 characters"):
        make_app(API_TOKEN="short")


def test_api_upserts_and_reports_each_bad_record(make_app):
    app = make_app(API_TOKEN=TOKEN)
    client, runtime = app.test_client(), app.extensions["newsletter"]
    records = [
        {
            "email": "ann@example.com",
            "orders_count": 3,
            "lifetime_value": 250.5,
            "last_order_at": "2026-11-01T08:00:00Z",
            "tier": "gold",
            "attributes": {"city": "Lyon"},
            "newsletter_score": 7,
        },
        {"email": "nope"},
        {"email": "bob@example.com", "orders_count": "3"},
        {"email": "bob@example.com", "orders_count": 2.5},
        {"email": "cid@example.com", "orders_count": True},
        {"email": "dan@example.com", "last_order_at": 20261101},
        {"email": "eve@example.com", "nested": {"a": 1}},
        {"email_hash": address_hash("fay@example.com"), "tier": "silver"},
        "not an object",
        {"orders_count": 1},
    ]
    response = client.post("/api/customers", json=records, headers=AUTH)
    assert response.status_code == 200
    data = response.get_json()
    assert {k: data[k] for k in ("received", "applied", "created", "updated", "rejected")} == {
        "received": 10,
        "applied": 3,
        "created": 3,
        "updated": 0,
        "rejected": 7,
    }
    assert [e["index"] for e in data["errors"]] == [1, 3, 4, 5, 6, 8, 9]
    reasons = {e["index"]: e["reason"] for e in data["errors"]}
    assert reasons[1].startswith("email 'nope':")
    assert reasons[9] == "no email (or email_hash)"
    assert "attribute nested" in reasons[6]

    ann = customer(runtime, "ann@example.com")
    assert ann.lifetime_value == Decimal("250.50") and ann.last_order_at == datetime(2026, 11, 1, 8, 0)
    assert ann.attributes == {"city": "Lyon", "newsletter_score": 7}
    assert customer(runtime, "bob@example.com").orders_count == 3
    assert customer(runtime, "fay@example.com").tier == "silver"

    # null clears a field; absent keys are left alone.
    again = client.post(
        "/api/customers", json=[{"email": "ann@example.com", "tier": None, "city": "Paris"}], headers=AUTH
    ).get_json()
    assert again["updated"] == 1 and again["created"] == 0
    ann = customer(runtime, "ann@example.com")
    assert ann.tier is None and ann.orders_count == 3 and ann.attributes["city"] == "Paris"


def test_api_rejects_what_is_not_a_list_and_too_many_records(make_app):
    client = make_app(API_TOKEN=TOKEN).test_client()
    not_json = client.post("/api/customers", data="{", headers={**AUTH, "Content-Type": "application/json"})
    assert not_json.status_code == 400 and "JSON" in not_json.get_json()["error"]
    an_object = client.post("/api/customers", json={"email": "a@example.com"}, headers=AUTH)
    assert an_object.status_code == 400
    too_many = client.post(
        "/api/customers", json=[{"email": f"u{i}@example.com"} for i in range(10_001)], headers=AUTH
    )
    assert too_many.status_code == 413 and "at most 10000 records" in too_many.get_json()["error"]
    huge = client.post(
        "/api/customers", data=b"[" + b" " * (9 * 1024 * 1024) + b"]", headers={**AUTH, "Content-Type": "x"}
    )
    assert huge.status_code == 413 and huge.is_json


def test_customer_data_never_makes_anyone_a_recipient(make_app):
    """Customers live in their own table keyed by hash; no subscriber is created from them."""
    from newsletter.models import Subscriber

    app = make_app(API_TOKEN=TOKEN)
    client, runtime = app.test_client(), app.extensions["newsletter"]
    client.post("/api/customers", json=[{"email": "shopper@example.com", "orders_count": 9}], headers=AUTH)
    with runtime.sessions() as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 0
        stored = session.scalar(select(Customer))
    assert stored.email_hash == address_hash("shopper@example.com")
    assert "shopper" not in repr(stored.attributes)


def test_api_takes_ten_thousand_records_in_one_request(make_app):
    """A full request (about 1.5 MB, more than the forms' 1 MB limit) goes through in one piece."""
    app = make_app(API_TOKEN=TOKEN)
    client, runtime = app.test_client(), app.extensions["newsletter"]
    records = [
        {"email": f"customer{i}@example.com", "orders_count": i % 7, "lifetime_value": i, "segment": "x" * 60}
        for i in range(10_000)
    ]
    response = client.post("/api/customers", json=records, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)[:200]
    assert response.get_json()["created"] == 10_000
    assert count(runtime) == 10_000


def test_import_with_refused_rows_exits_1_saying_how_many_and_where(app, runtime, tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("email,orders_count\nann@example.com,3\nnot an address,1\nbob@example.com,many\n")
    result = CliRunner().invoke(cli, ["customers", "import", str(path)], env=env_for(app))
    assert result.exit_code == 1
    assert "customers: 1 applied (1 new, 0 updated), 2 bad rows" in result.stdout
    errors = result.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in errors[:2]] == ["line 3", "line 4"]
    assert errors[-1] == (
        f"{path}: 2 row(s) refused (their line numbers above); the other 1 were applied; "
        "fix them and import the file again (applied rows are not repeated)"
    )
    assert count(runtime) == 1  # the good row is kept
