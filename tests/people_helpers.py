"""People made through the services, as the signup form and its confirmation link make them."""

from __future__ import annotations

from sqlalchemy import select

from newsletter.models import ConsentAction, ConsentEvent, Subscriber
from newsletter.subscribers import signup
from newsletter.subscribers.consent import RequestInfo, signup_wording

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
            wording=signup_wording(settings.store_name),
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
