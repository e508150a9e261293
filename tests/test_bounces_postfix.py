"""A real Postfix relay refuses a recipient at its next hop, writes the DSN itself, and delivers it to
``bounces serve``: the delivery row gets its hard bounce and the address is suppressed.

A private Postfix instance (``postfix -c DIR``: its own main.cf, master.cf and queue under the test's
tmp_path, loopback only, non-standard ports, no DNS, no local delivery) is the engine's relay. Its
transport map sends the recipient's domain to an aiosmtpd server of the test that answers
550 5.1.1 at RCPT, and the bounce domain to the bounce receiver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from newsletter.feedback.server import make_server
from newsletter.models import Delivery, DeliveryEvent, SignalKind, Suppression, SuppressionReason
from tests.conftest import _free_port
from tests.feedback_helpers import wait_for

pytestmark = pytest.mark.postfix

POSTFIX = Path("/usr/sbin/postfix")

#: the services a relay needs; chroot off (column 5) so the instance needs no copies of /etc
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test.example
mydomain = test.example
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is off in this test
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost =
default_transport = error:5.4.4 no route outside this test
transport_maps = texthash:{dir}/transport
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
biff = no
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
syslog_name = postfix-newsletter-test
"""


class RefuseRecipients:
    """The next hop: every recipient is unknown."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"


@pytest.fixture
def postfix():
    """Start a private Postfix; yields a function (routes) -> its SMTP port; stops it at the end."""
    if not POSTFIX.exists():
        if os.environ.get("CI"):
            pytest.fail("postfix is not installed (apt-get install postfix)")
        pytest.skip("postfix is not installed (apt-get install postfix)")
    # not under pytest's tmp_path: its parents are root-only, and Postfix's daemons run as "postfix"
    folder = Path(tempfile.mkdtemp(prefix="newsletter-postfix-"))
    folder.chmod(0o755)
    (folder / "queue").mkdir()
    (folder / "data").mkdir()
    shutil.chown(folder / "data", "postfix")
    started = []

    def start(routes: dict[str, int]) -> int:
        port = _free_port()
        (folder / "main.cf").write_text(MAIN_CF.format(dir=folder))
        (folder / "master.cf").write_text(MASTER_CF.format(port=port))
        (folder / "transport").write_text(
            "".join(f"{domain} smtp:[127.0.0.1]:{hop}\n" for domain, hop in routes.items())
        )
        done = subprocess.run(
            [str(POSTFIX), "-c", str(folder), "start"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr + done.stdout
        started.append(folder)
        return port

    yield start
    for instance in started:
        subprocess.run([str(POSTFIX), "-c", str(instance), "stop"], capture_output=True, timeout=60)
        log = instance / "maillog"
        if log.exists():
            print(log.read_text()[-4000:])  # shown with the test's output when it failed
    shutil.rmtree(folder, ignore_errors=True)


def test_postfix_writes_the_dsn_itself_and_bounces_serve_records_it(
    make_app, make_subscriber, smtp_sink, work, tmp_path, postfix
):
    refuser = Controller(RefuseRecipients(), hostname="127.0.0.1", port=_free_port())
    refuser.start()
    bounce_port = _free_port()
    relay = postfix({"example.com": refuser.port, "store.example": bounce_port})
    app = make_app(
        BOUNCE_ADDRESS="bounces@store.example",
        MARKETING_CAPS="",
        QUIET_HOURS="",
        SMTP_URL=f"smtp://127.0.0.1:{relay}",  # the engine's relay is Postfix
    )
    runtime = app.extensions["newsletter"]
    receiver = make_server(runtime, "127.0.0.1", bounce_port)
    receiver.start()
    try:
        sent = send_campaign_via(runtime, make_subscriber, work, tmp_path)

        def bounced():
            with runtime.sessions() as session:
                return session.scalar(
                    select(Delivery).where(Delivery.id == sent, Delivery.bounce_kind.is_not(None))
                )

        delivery = wait_for(bounced, timeout=120, what="Postfix's DSN to reach the delivery row")
        with runtime.sessions() as session:
            [event] = session.scalars(select(DeliveryEvent))
            entry = session.scalar(select(Suppression))
    finally:
        receiver.stop()
        refuser.stop()
    assert delivery.bounce_kind == "hard"
    assert (event.kind, event.status_code, event.source) == (SignalKind.BOUNCE_HARD, "5.1.1", "smtp")
    assert "User unknown" in event.diagnostic and event.provider_event_id.endswith("@relay.test.example>")
    assert entry.reason == SuppressionReason.BOUNCED


def send_campaign_via(runtime, make_subscriber, work, tmp_path) -> int:
    """Send the campaign to ann@example.com through RUNTIME's relay; the delivery row's id."""
    from datetime import timedelta

    from newsletter.campaigns import scheduling
    from tests.sending_helpers import now_floor, run_engine, write_campaign

    make_subscriber("ann@example.com", topics=("early-access",))
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    with runtime.sessions() as session:
        delivery = session.scalar(select(Delivery))
        assert delivery.sent_at is not None, "the relay did not take the message"
        return delivery.id
