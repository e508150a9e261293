"""The dashboard's accounts and sign-in without a browser: ``newsletter users``, hashes, sessions, roles."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from newsletter.admin import accounts
from newsletter.admin.auth import safe_next
from newsletter.cli import cli
from newsletter.core import clock
from newsletter.models import Account, Role
from tests.conftest import _free_port, csrf_token
from tests.test_cli import env_for

PASSWORD = "correct horse battery"


def users(app, *args, input: str | None = None):
    return CliRunner().invoke(cli, ["users", *args], env=env_for(app), input=input)


def add(runtime, email: str, role: Role, password: str = PASSWORD) -> None:
    with runtime.sessions() as session:
        accounts.add_account(session, email, role, password)
        session.commit()


def sign_in(client, email: str, password: str = PASSWORD, **environ):
    page = client.get("/admin/login").get_data(as_text=True)
    return client.post(
        "/admin/login",
        data={"csrf_token": csrf_token(page), "email": email, "password": password},
        environ_base={"REMOTE_ADDR": "198.51.100.4", **environ},
    )


def test_users_add_list_reset_and_remove_with_the_password_never_an_argument(app, runtime):
    done = users(
        app, "add", "Ann@Store.Example", "--role", "admin", "--password-stdin", input=PASSWORD + "\n"
    )
    assert done.exit_code == 0, done.output
    assert done.output == "ann@store.example: admin account added\n"
    # the prompt asks twice and does not echo
    done = users(app, "add", "bob@store.example", "--role", "viewer", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert done.exit_code == 0, done.output
    assert PASSWORD not in done.output
    with runtime.sessions() as session:
        stored = {a.email: a for a in session.scalars(select(Account))}
    assert set(stored) == {"ann@store.example", "bob@store.example"}
    assert stored["bob@store.example"].role == Role.VIEWER
    assert stored["ann@store.example"].password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored["ann@store.example"].password_hash

    listed = users(app, "list").output.splitlines()
    assert [line.split()[:2] for line in listed] == [
        ["ann@store.example", "admin"],
        ["bob@store.example", "viewer"],
    ]
    assert "last sign-in never" in listed[0] and "argon2" not in users(app, "list").output

    # no option takes the password itself
    wrong = users(app, "add", "eve@store.example", "--role", "admin", "--password", PASSWORD)
    assert wrong.exit_code == 2 and "No such option '--password'" in wrong.output

    assert (
        users(
            app, "reset-password", "bob@store.example", "--password-stdin", input="another long one\n"
        ).exit_code
        == 0
    )
    with runtime.sessions() as session:
        assert accounts.authenticate(session, "bob@store.example", "another long one") is not None
        assert accounts.authenticate(session, "bob@store.example", PASSWORD) is None

    assert users(app, "remove", "bob@store.example").output == "bob@store.example: removed\n"
    last = users(app, "remove", "ann@store.example")
    assert last.exit_code == 1
    assert last.output == "Error: ann@store.example is the last admin; add another admin first\n"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["add", "ann@store.example", "--role", "admin", "--password-stdin"],
            "short\n",
            "at least 12 characters",
        ),
        (
            ["add", "not-an-address", "--role", "admin", "--password-stdin"],
            PASSWORD + "\n",
            "'not-an-address':",
        ),
        (
            ["add", "ann@store.example", "--role", "owner", "--password-stdin"],
            PASSWORD + "\n",
            "'owner' is not one of",
        ),
        (["add", "ann@store.example", "--role", "admin", "--password-stdin"], "", "held no password"),
        (["reset-password", "nobody@store.example", "--password-stdin"], PASSWORD + "\n", "no such account"),
        (["remove", "nobody@store.example"], None, "nobody@store.example: no such account"),
    ],
)
def test_users_bad_input_is_one_line_and_changes_nothing(app, runtime, args, stdin, message):
    done = users(app, *args, input=stdin)
    assert done.exit_code in (1, 2), done.output
    assert message in done.output and "Traceback" not in done.output
    with runtime.sessions() as session:
        assert session.scalars(select(Account)).all() == []


def test_adding_an_address_twice_is_refused(app, runtime):
    add(runtime, "ann@store.example", Role.ADMIN)
    done = users(
        app, "add", "ANN@store.example", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n"
    )
    assert done.output == "Error: ann@store.example already has an account (reset its password instead)\n"


def test_nothing_under_admin_without_an_account(client):
    for path in ("/admin/", "/admin/campaigns", "/admin/campaigns/any"):
        answer = client.get(path)
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith("/admin/login?next=/admin")
    # a POST without an account is not carried out either (and without a token it is refused first)
    assert client.post("/admin/campaigns/any/pause").status_code == 400


def test_a_password_reset_ends_the_sessions_signed_in_before(app, client, runtime):
    add(runtime, "ann@store.example", Role.VIEWER)
    assert sign_in(client, "ann@store.example").status_code == 303
    assert client.get("/admin/campaigns").status_code == 200
    clock.travel(timedelta(seconds=5))
    assert (
        users(
            app, "reset-password", "ann@store.example", "--password-stdin", input="a new long password\n"
        ).exit_code
        == 0
    )
    assert client.get("/admin/campaigns").status_code == 302


def test_signing_in_fails_closed_without_redis(make_app, runtime):
    add(runtime, "ann@store.example", Role.VIEWER)
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    answer = sign_in(app.test_client(), "ann@store.example")
    assert answer.status_code == 503
    assert "Signing in is unavailable right now" in answer.get_data(as_text=True)


def test_a_view_that_declares_no_role_is_refused(app, client):
    @app.get("/admin/forgotten", endpoint="admin.forgotten")
    def forgotten():
        return "secret"

    assert client.get("/admin/forgotten").status_code == 403


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/campaigns/spring?x=1", "/admin/campaigns/spring?x=1"),
        ("https://evil.example/admin", "/admin/overview"),
        ("//evil.example/admin", "/admin/overview"),
        ("/\\evil.example", "/admin/overview"),
        ("/subscribe", "/admin/overview"),
        (None, "/admin/overview"),
    ],
)
def test_after_signing_in_only_admin_paths_of_this_site(app, target, expected):
    with app.test_request_context():
        assert safe_next(target) == expected


def test_an_old_hash_is_replaced_at_the_next_sign_in(runtime):
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with runtime.sessions() as session:
        session.add(Account(email="ann@store.example", role=Role.VIEWER, password_hash=weak))
        session.commit()
        assert accounts.authenticate(session, "ann@store.example", PASSWORD) is not None
        session.commit()
        stored = session.scalar(select(Account.password_hash))
    assert stored != weak and re.search(r"m=65536,t=3,p=4", stored)


def test_the_dashboards_error_pages_lead_back_into_the_dashboard(app, client, runtime):
    add(runtime, "vic@store.example", Role.VIEWER)
    sign_in(client, "vic@store.example")
    missing = client.get("/admin/campaigns/no-such-campaign")
    assert missing.status_code == 404
    page = missing.get_data(as_text=True)
    assert "No campaign &#39;no-such-campaign&#39; is scheduled." in page
    assert 'href="/admin/">Back to the dashboard' in page
    # a viewer's forged pause: the form is refused first, and the page still leads into the dashboard
    refused = client.post("/admin/campaigns/no-such-campaign/pause", data={})
    assert refused.status_code in (400, 403)
    assert "Back to the dashboard" in refused.get_data(as_text=True)
    assert "signup page" not in refused.get_data(as_text=True)
