"""Plain value sets shared by the schema and the CLI, importable without SQLAlchemy.

A command's ``--help`` lists some of these values (``suppressions add --reason``); keeping them
here lets the help print without loading the models.
"""

from __future__ import annotations

import enum


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"  #: left everything; a fresh double opt-in lifts it
    BOUNCED = "bounced"  #: hard bounce (5xx at RCPT); a fresh double opt-in lifts it
    COMPLAINED = "complained"  #: marked as spam; only an operator lifts it
    ERASED = "erased"  #: data erased on request; a fresh double opt-in lifts it
    MANUAL = "manual"  #: added by an operator; only an operator lifts it


#: Reasons that a person's own fresh double opt-in may lift; the others need an operator.
LIFTED_BY_OPT_IN = frozenset(
    {SuppressionReason.UNSUBSCRIBED, SuppressionReason.BOUNCED, SuppressionReason.ERASED}
)


class Role(enum.StrEnum):
    """What a dashboard account may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"  #: reads every page
    MARKETER = "marketer"  #: and pauses, resumes and cancels campaigns
    ADMIN = "admin"  #: and manages accounts

    @property
    def rank(self) -> int:
        return list(Role).index(self)
