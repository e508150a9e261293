"""The dashboard's people pages without a browser, on SQLite and PostgreSQL: the address search (by
prefix, any letter case, keyset pages, read from its index), a profile and its consent ledger, the
suppression list, the partner exchanges, and bad input answered in a line, never a 500."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import event, text

from newsletter.admin import people
from newsletter.core import clock
from newsletter.customers.records import import_records
from newsletter.models import Frequency, Role, Subscriber, SuppressionReason
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import lookup, preferences, suppression
from newsletter.subscribers.consent import RequestInfo
from tests.people_helpers import join, not_welcomes, share_at
from tests.test_admin import add, sign_in

pytest_plugins = ["tests.partner_stores"]


@pytest.fixture
def viewer(client, runtime):
    """The test client signed in as a viewer (the lowest role: it sees these pages)."""
    add(runtime, "vic@store.example", Role.VIEWER)
    assert sign_in(client, "vic@store.example").status_code == 303
    return client


def page_of(client, url: str, status: int = 200) -> str:
    answer = client.get(url)
    assert answer.status_code == status, answer.get_data(as_text=True)[:500]
    return answer.get_data(as_text=True)


def rows(html: str, table: str) -> list[str]:
    """The first cell's text of every row of ``table``."""
    body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body, f"no table {table}"
    cells = re.findall(r"<tr[^>]*>\s*<td[^>]*>(.*?)</td>", body.group(1), re.S)
    return [unescape(re.sub(r"<[^>]+>", " ", cell)).split()[0] for cell in cells]


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', html)
    return unescape(found.group(1)) if found else None


def test_nobody_without_an_account_sees_a_person(client, runtime):
    sid = join(runtime, "ann@example.com")
    for url in (
        "/admin/subscribers?q=ann",
        f"/admin/subscribers/{sid}",
        "/admin/suppressions",
        "/admin/partners",
    ):
        answer = client.get(url)
        assert answer.status_code == 302 and "/admin/login" in answer.headers["Location"], url


def test_search_finds_by_prefix_in_any_letter_case_in_address_order(viewer, runtime):
    for email in ("Ann.Lee@example.com", "anna@example.com", "bob@example.com", "ANDY@example.org"):
        join(runtime, email)
    join(runtime, "andrea@example.net", topics=("newsletter", "product-news"), confirm=False)

    html = page_of(viewer, "/admin/subscribers?q=AN")
    assert rows(html, "subscribers") == [
        "andrea@example.net",
        "ANDY@example.org",
        "Ann.Lee@example.com",
        "anna@example.com",
    ]
    andrea = re.search(r'<tr id="subscriber-\d+">.*?andrea@example.net.*?</tr>', html, re.S).group(0)
    assert "pending" in andrea and "product-news (pending)" in andrea
    assert clock.now().strftime("%Y-%m-%d") in andrea  # the signup date

    assert rows(page_of(viewer, "/admin/subscribers?q=ann.LEE@EXAMPLE.COM"), "subscribers") == [
        "Ann.Lee@example.com"
    ]
    assert "active" in page_of(viewer, "/admin/subscribers?q=bob@")
    html = page_of(viewer, "/admin/subscribers?q=zed")
    assert "No address starts with “zed”." in unescape(html)
    # no query: everyone, newest first
    assert rows(page_of(viewer, "/admin/subscribers"), "subscribers")[0] == "andrea@example.net"


def test_pages_follow_the_keyset_both_ways(viewer, runtime, monkeypatch):
    monkeypatch.setattr(people, "PAGE_SIZE", 3)
    emails = [f"p{n:02d}@example.com" for n in range(8)]
    for email in emails:
        join(runtime, email)
    join(runtime, "q00@example.com")  # outside the prefix

    for query, expected in (("P", emails), ("", ["q00@example.com", *reversed(emails)])):
        seen, url, pages = [], f"/admin/subscribers?q={query}", []
        while url:
            html = page_of(viewer, url)
            pages.append(html)
            seen += rows(html, "subscribers")
            url = link(html, "next")
        assert seen == expected
        assert len(pages) == -(-len(expected) // 3)
        assert link(pages[0], "prev") is None and link(pages[-1], "next") is None
        # back from the last page, page by page, to the first
        back, url = [], link(pages[-1], "prev")
        while url:
            html = page_of(viewer, url)
            back = rows(html, "subscribers") + back
            url = link(html, "prev")
        assert back + rows(pages[-1], "subscribers") == expected
        assert "q=" + query in (link(pages[1], "first") or "") or not query

    # a cursor that names no row gives the first page
    for cursor in ("after=424242", "after=abc", "before=-4", "after=99999999999999999999999"):
        assert rows(page_of(viewer, f"/admin/subscribers?q=p&{cursor}"), "subscribers") == emails[:3]


def test_the_prefix_search_reads_its_index(runtime):
    """The search's own SQL, explained: a range of ix_subscribers_address_key, not a scan of the table."""
    join(runtime, "ann@example.com")
    engine, seen = runtime.engine, []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        if "subscribers.email" in statement and "subscriptions" not in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with runtime.sessions() as session:
            page = lookup.search(session, "an", size=2)
            lookup.search(session, "an", after=page.rows[0].id, size=2)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    searches = [s for s in seen if "ORDER BY" in s[0]]
    assert len(searches) == 2  # the first page, then one after a cursor
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            indexdef = conn.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_subscribers_address_key'")
            )
            assert 'lower((email)::text) COLLATE "C", id' in indexdef
            conn.exec_driver_sql("SET enable_seqscan = off")  # a 1-row table: what the plan could use
            for statement, parameters in searches:
                plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
                assert "Index Scan using ix_subscribers_address_key" in plan, plan
                assert "Sort" not in plan, plan  # read in index order, LIMIT stops the scan
        else:
            for statement, parameters in searches:
                plan = " ".join(
                    str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                )
                assert "SEARCH subscribers USING INDEX ix_subscribers_address_key" in plan, plan
                assert "TEMP B-TREE" not in plan, plan


def test_a_profile_shows_the_person_and_the_ledger_in_order(viewer, runtime, caplog):
    sid = join(runtime, "ann@example.com", topics=("newsletter", "early-access"), first_name="Ann")
    with runtime.sessions() as session:
        ann = session.get(Subscriber, sid)
        wanted = preferences.current(ann)
        wanted.frequency, wanted.pause_weeks, wanted.time_zone = Frequency.WEEKLY, 2, "Europe/Paris"
        preferences.update(session, ann, wanted, RequestInfo("203.0.113.9", "t/1", "web:preferences"), {})
        session.commit()
        clock.travel(timedelta(minutes=5))
        preferences.unsubscribe(
            session, ann, RequestInfo(None, None, "email:list-unsubscribe"), topic="early-access"
        )
        import_records(session, [{"email": "ann@example.com", "lifetime_value": "123.45", "orders_count": 3}])
        session.commit()

    with caplog.at_level("INFO", logger="newsletter.admin.people"):
        html = unescape(page_of(viewer, f"/admin/subscribers/{sid}"))
    # who looked at whom, by id: the log never carries the address
    assert [r.getMessage() for r in caplog.records if r.name == "newsletter.admin.people"] == [
        f"admin vic@store.example viewed subscriber {sid}"
    ]
    assert '<h1 class="address" id="address">ann@example.com</h1>' in html
    assert re.search(r'id="status"><span class="status active">active', html)
    assert 'id="frequency">weekly' in html and "Europe/Paris" in html
    assert re.search(r'id="paused">until <time', html)
    assert 'id="lifetime-value">123.45' in html
    ledger = re.search(r'<table id="ledger">(.*?)</table>', html, re.S).group(1)
    actions = re.findall(r'<tr data-action="(\w+)">', ledger)
    assert actions == ["signup_requested", "confirmed", "preferences_changed", "unsubscribed"]
    assert (
        ledger.index("web:subscribe") < ledger.index("web:confirm") < ledger.index("email:list-unsubscribe")
    )
    assert "signup-2026-11" in ledger and "203.0.113.9" in ledger
    topics = re.search(r'<table id="topics">(.*?)</table>', html, re.S).group(1)
    assert re.search(r'data-topic="early-access">.*?unsubscribed', topics, re.S)
    assert "No campaign was sent to this address." in html


def test_an_unknown_id_is_a_friendly_404(viewer):
    for sid in ("424242", "99999999999999999999999"):
        html = unescape(page_of(viewer, f"/admin/subscribers/{sid}", 404))
        assert f"There is no subscriber #{sid}." in html
        assert 'id="who"' in html  # inside the dashboard's own layout, signed in
    page_of(viewer, "/admin/subscribers/ann", 404)


@pytest.mark.parametrize(
    ("url", "status", "answer"),
    [
        ("/admin/subscribers?q=%00", 400, "An address has no control characters"),
        ("/admin/subscribers?q=a%0Ab", 400, "An address has no control characters"),
        (
            "/admin/subscribers?q=" + "a" * 400,
            400,
            "An address has at most 320 characters; this search has 400.",
        ),
        ("/admin/subscribers?q=%25_%5C'%22;--", 200, "No address starts with"),
        ("/admin/subscribers?q=%F4%8F%BF%BF", 200, "No address starts with"),
        ("/admin/subscribers?q=%ED%A0%80", 200, "No address starts with"),
        ("/admin/suppressions?q=not%20an%20address", 400, "is neither an address nor an address hash"),
        ("/admin/suppressions?q=%00", 400, "is neither an address nor an address hash"),
        ("/admin/suppressions?reason=everything", 400, "is not a reason; the reasons are unsubscribed,"),
        ("/admin/partners?after=%00&before=x", 200, "No partner store is registered"),
    ],
)
def test_a_bad_query_is_answered_in_one_line(viewer, url, status, answer):
    assert answer in unescape(page_of(viewer, url, status))


def test_the_suppression_list_newest_first_searchable_by_address_and_reason(viewer, runtime, monkeypatch):
    monkeypatch.setattr(people, "PAGE_SIZE", 2)
    join(runtime, "ann@example.com")
    stranger = address_hash("stranger@example.org")
    with runtime.sessions() as session:
        suppression.suppress(
            session, address_hash("ann@example.com"), SuppressionReason.COMPLAINED, "arf:gmail"
        )
        clock.travel(timedelta(minutes=1))
        suppression.suppress(
            session, stranger, SuppressionReason.BOUNCED, "smtp:550", note="5.1.1 user unknown"
        )
        clock.travel(timedelta(minutes=1))
        suppression.suppress(session, address_hash("cy@example.com"), SuppressionReason.MANUAL, "cli")
        session.commit()

    first = unescape(page_of(viewer, "/admin/suppressions"))
    assert re.findall(r'<td class="reason"><span class="status (\w+)"', first) == ["manual", "bounced"]
    assert f"{stranger[:16]}…" in first and "5.1.1 user unknown" in first and "smtp:550" in first
    assert "stranger@example.org" not in first  # the list holds hashes; no subscriber has this one
    second = unescape(page_of(viewer, link(first, "next")))
    assert re.findall(r'<td class="reason"><span class="status (\w+)"', second) == ["complained"]
    assert "ann@example.com" in second and "arf:gmail" in second  # a subscriber's hash: the address shows
    assert link(second, "next") is None and link(second, "prev")

    found = unescape(page_of(viewer, "/admin/suppressions?q=Stranger@Example.org"))
    assert re.findall(r'<td class="reason"><span class="status (\w+)"', found) == ["bounced"]
    assert "bounced" in unescape(page_of(viewer, f"/admin/suppressions?q={stranger}"))
    by_reason = unescape(page_of(viewer, "/admin/suppressions?reason=complained"))
    assert re.findall(r'<td class="reason"><span class="status (\w+)"', by_reason) == ["complained"]
    none = unescape(page_of(viewer, "/admin/suppressions?q=ann@example.com&reason=bounced"))
    assert "“ann@example.com” is not suppressed as bounced." in none


def test_the_partners_page_shows_shares_invitations_and_each_import(stores, smtp_sink, tmp_path):
    a, b = stores()
    share_at(a, smtp_sink, "ann@example.com")
    share_at(a, smtp_sink, "fay@example.com")
    share_at(b, smtp_sink, "fay@example.com", partners=("store-a",))  # B's own subscriber, sharing with A
    out = tmp_path / "a-to-b.jsonl"
    assert a.cli("partners", "export", "store-b", "--out", str(out)).exit_code == 0
    assert b.cli("partners", "import", "store-a", str(out)).exit_code == 0
    b.work()
    assert not_welcomes(smtp_sink.take()) == ["ann@example.com"]

    add(b.runtime, "vic@store.example", Role.VIEWER)
    client = b.client()
    assert sign_in(client, "vic@store.example").status_code == 303
    html = unescape(page_of(client, "/admin/partners"))
    row = re.search(r'<tr id="partner-store-a">(.*?)</tr>', html, re.S).group(1)
    assert "Store A" in row
    numbers = dict(re.findall(r'<td class="num (\w+)">(\d+)', row))
    assert numbers == {"shares": "1", "imports": "1", "sent": "1", "pending": "0", "failed": "0"}
    imports = re.search(r'<table id="imports">(.*?)</table>', html, re.S).group(1)
    assert "store-a" in imports and "via cli" in imports
    assert "invited: 1" in imports and "skipped, already subscribed: 1" in imports
