"""``make demo``: one double opt-in signup, end to end, on the embedded defaults.

The real HTTP app serves on loopback, a real RQ worker delivers the confirmation to
the Maildir outbox, and the confirmation is POSTed from the link in that email.
"""

from __future__ import annotations

import email
import email.policy
import http.cookiejar
import json
import mailbox
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import redis
from werkzeug.serving import make_server

from newsletter.core.config import load_settings
from newsletter.core.runtime import default_instance_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    if not match:
        raise RuntimeError("no CSRF token on the page")
    return match.group(1)


def _say(step: str) -> None:
    print(f"==> {step}", flush=True)


def run_demo(_cwd: Path) -> None:
    from newsletter import create_app
    from newsletter.core.migrate import upgrade
    from newsletter.subscribers.data_rights import describe_subscriber

    instance = default_instance_path()
    if not (instance / "config.toml").exists() and "NEWSLETTER_SECRET_KEY" not in os.environ:
        subprocess.run([sys.executable, "-m", "newsletter", "init"], check=True)
    settings = load_settings(instance)

    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2).ping()
        use_redis = True
        _say(f"Redis at {settings.redis_url} answers: the confirmation goes through an RQ worker")
    except redis.RedisError:
        use_redis = False
        _say(
            f"Redis at {settings.redis_url} is not reachable: jobs run synchronously "
            "in the web process instead (QUEUE_SYNC)"
        )

    upgrade(settings.database_url)
    _say(f"database migrated: {settings.database_url}")

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    overrides = {"BASE_URL": base_url, "QUEUE_SYNC": not use_redis}
    app = create_app(overrides)
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _say(f"web app serving at {base_url}")

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.addheaders = [("User-Agent", "newsletter-demo/1.0")]

    def post(url: str, fields: list[tuple[str, str]]) -> str:
        data = urllib.parse.urlencode(fields).encode()
        with opener.open(urllib.request.Request(url, data=data)) as response:
            return response.read().decode()

    address = f"demo+{int(time.time())}@example.com"
    page = opener.open(f"{base_url}/subscribe").read().decode()
    answer = post(
        f"{base_url}/subscribe",
        [
            ("csrf_token", _csrf(page)),
            ("email", address),
            ("first_name", "Dana"),
            ("topics", "newsletter"),
            ("topics", "early-access"),
            ("website", ""),
        ],
    )
    assert "Check your inbox" in answer, answer
    _say(f"signed up {address} through the form (topics: newsletter, early-access)")

    if use_redis:
        env = {**os.environ, "NEWSLETTER_BASE_URL": base_url, "NEWSLETTER_INSTANCE_PATH": str(instance)}
        subprocess.run(
            [sys.executable, "-m", "newsletter", "worker", "--burst", "--queue", "transactional"],
            check=True,
            env=env,
        )
        _say("an RQ worker (burst mode) delivered the queued confirmation email")

    outbox = mailbox.Maildir(settings.outbox_dir, create=False)
    message = None
    for key in outbox.keys():
        candidate = email.message_from_bytes(outbox.get_bytes(key), policy=email.policy.default)
        if candidate["To"] == address:
            message, path = candidate, Path(settings.outbox_dir) / "new" / key
    if message is None:
        raise SystemExit(f"no confirmation email for {address} in {settings.outbox_dir}")
    text = message.get_body(("plain",)).get_content()
    link = re.search(r"(http://\S+/confirm/\S+)", text).group(1)
    _say(f"confirmation email found: {path}")
    _say(f"subject: {message['Subject']}")

    page = opener.open(link).read().decode()  # GET: shows a button, changes nothing
    answer = post(link, [("csrf_token", _csrf(page))])
    assert "You are subscribed" in answer, answer
    _say("confirmed with one POST from the email's link")

    with app.extensions["newsletter"].sessions() as session:
        print(json.dumps(describe_subscriber(session, address), indent=2))
    server.shutdown()
    _say(
        f"done. Emails are in the Maildir outbox {settings.outbox_dir} (new/); the database is "
        f"{settings.database_url}"
    )
