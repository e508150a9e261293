"""People made through the services, as the signup form and its confirmation link make them."""

from __future__ import annotations

from sqlalchemy import select

from newsletter.models import ConsentAction, ConsentEvent, Subscriber
from newsletter.subscribers import signup
from newsletter.subscribers.consent import RequestInfo
from newsletter.subscribers.wording import signup_wording

WEB = RequestInfo("203.0.113.7", "people-test/1.0", "web:subscribe")


def join(
    runtime, email: str, topics=("newsletter",), first_name: str | None = None, confirm: bool = True
) -> int:
    """Sign ``email`` up (and confirm it, unless ``confirm`` is False); returns the subscriber's id.

    The mail the signup writes stays in the outbox: nothing here enqueues it.
    """
    settings = runtime.settings
    with runtime.sessions() as session:
        outcome = signup.request_signup(
            session,
            runtime.redis,
            settings,
            email=email,
            first_name=first_name,
            topic_slugs=list(topics),
            wording=signup_wording(settings),
            request=WEB,
            dispatch=lambda _outbox_id: None,
        )
        session.commit()
        if confirm:
            subscriber = session.get(Subscriber, outcome.subscriber_id)
            asked = session.scalars(
                select(ConsentEvent)
                .where(
                    ConsentEvent.subscriber_id == subscriber.id,
                    ConsentEvent.action == ConsentAction.SIGNUP_REQUESTED,
                )
                .order_by(ConsentEvent.id.desc())
            ).first()
            signup.confirm(
                session, subscriber, asked, RequestInfo("203.0.113.7", "people-test/1.0", "web:confirm")
            )
            session.commit()
        return outcome.subscriber_id


def share_at(store, smtp_sink, email: str, partners=("store-b",)) -> None:
    """``email`` signs up at ``store`` (a tests.partner_stores.Store) ticking ``partners`` and confirms
    from the email. The welcome that follows is not waited for: see :func:`not_welcomes`."""
    assert store.signup(email, partners=partners, first_name="Ann").status_code == 200
    store.work()
    [mail] = [m for m in smtp_sink.take() if m["To"] == email and "Welcome" not in m["Subject"]]
    assert store.follow_confirm(mail).status_code == 200
    store.work()


def not_welcomes(messages) -> list[str]:
    """The recipients of the messages that are not welcomes (a welcome's job may finish late)."""
    return [m["To"] for m in messages if "Welcome" not in m["Subject"]]
