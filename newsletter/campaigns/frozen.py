"""The frozen campaign: what scheduling stores in ``Campaign.compiled`` and sending reads back.

Typed objects over the JSON column, so that a misspelt field is an AttributeError (and a
finding of the typing checks) instead of a KeyError in a worker. The JSON shape is the one
the column has always held, so rows frozen before these types existed read back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from newsletter.core.languages import SOURCE_LANGUAGE

if TYPE_CHECKING:
    from newsletter.models import Campaign

#: The key of the one email every wave shares (waves with equal sources share one email).
ALL_WAVES = "all"


@dataclass(frozen=True, slots=True)
class FrozenEmail:
    """One wave's compiled email: personal values are slot tokens, described in ``slots``."""

    subject: str
    html: str
    text: str
    #: slot token -> (value name, context[, fallback])
    slots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: headers of the wave's email; values may hold slot tokens (the unsubscribe URL)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: the tracked links this email holds: indices into ``FrozenCampaign.links`` (click tracking)
    links: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = {
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "slots": {token: list(slot) for token, slot in self.slots.items()},
            "headers": dict(self.headers),
        }
        if self.links:
            data["links"] = list(self.links)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FrozenEmail:
        return cls(
            subject=data["subject"],
            html=data["html"],
            text=data["text"],
            slots={token: tuple(slot) for token, slot in (data.get("slots") or {}).items()},
            headers=dict(data.get("headers") or {}),
            links=tuple(data.get("links") or ()),
        )


@dataclass(frozen=True, slots=True)
class FrozenReward:
    """``[reward]`` as scheduled: a pool's name, or a generated code's prefix and days valid."""

    pool: str | None = None
    prefix: str = ""
    expires_in_days: int = 0

    def to_json(self) -> dict[str, Any]:
        if self.pool is not None:
            return {"pool": self.pool}
        return {"prefix": self.prefix, "expires_in_days": self.expires_in_days}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FrozenReward | None:
        if not data:
            return None
        if data.get("pool"):
            return cls(pool=data["pool"])
        return cls(prefix=data["prefix"], expires_in_days=int(data["expires_in_days"]))


@dataclass(frozen=True, slots=True)
class FrozenCampaign:
    """A campaign as scheduled: its sender, its files' hashes and the email of each wave."""

    sender: str
    #: the MAIL FROM address: the sender's bare address
    envelope_from: str
    #: SHA-256 of each file of the folder by relative path (to name what changed after an edit)
    files: Mapping[str, str] = field(default_factory=dict)
    #: wave name (or ALL_WAVES) -> its email
    waves: Mapping[str, FrozenEmail] = field(default_factory=dict)
    #: campaign.toml's track_clicks and track_opens (rows frozen before them: off)
    track_clicks: bool = False
    track_opens: bool = False
    #: the tracked links' targets; ``/c/<token>/<n>`` redirects to ``links[n]`` and nowhere else
    links: tuple[str, ...] = ()
    #: campaign.toml's [reward]: every recipient gets a code of their own (None: no codes)
    reward: FrozenReward | None = None
    #: the language of ``waves`` (campaign.toml's ``language``; rows frozen before variants: English)
    language: str = SOURCE_LANGUAGE
    #: the per-language variants: language -> wave name (or ALL_WAVES) -> its email, like ``waves``
    variants: Mapping[str, Mapping[str, FrozenEmail]] = field(default_factory=dict)

    def email_for(self, wave_name: str | None, language: str | None = None) -> FrozenEmail:
        """The wave's own email, or the one all waves share; of ``language``'s variant if it has one."""
        emails = self.variants.get(language, self.waves) if language else self.waves
        return emails.get(wave_name or ALL_WAVES) or emails[ALL_WAVES]

    def language_for(self, language: str | None, default_language: str) -> str:
        """Which email a recipient gets: their language's, else the store's default language's, else
        the folder's default (``self.language``)."""
        for wanted in (language, default_language):
            if wanted == self.language or wanted in self.variants:
                return wanted
        return self.language

    def emails_of(self, wave_name: str | None) -> list[FrozenEmail]:
        """The wave's email in every language (the default's first)."""
        return [self.email_for(wave_name), *(self.email_for(wave_name, lang) for lang in self.variants)]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "sender": self.sender,
            "envelope_from": self.envelope_from,
            "files": dict(self.files),
            "waves": {name: email.to_json() for name, email in self.waves.items()},
        }
        # written only when on, so an untracked campaign's row keeps the shape it always had
        if self.track_clicks:
            data["track_clicks"] = True
            data["links"] = list(self.links)
        if self.track_opens:
            data["track_opens"] = True
        if self.reward:
            data["reward"] = self.reward.to_json()
        # likewise only when there is something to say: a one-language English campaign's row is unchanged
        if self.language != SOURCE_LANGUAGE:
            data["language"] = self.language
        if self.variants:
            data["variants"] = {
                lang: {name: email.to_json() for name, email in emails.items()}
                for lang, emails in self.variants.items()
            }
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FrozenCampaign:
        sender = data.get("sender") or ""
        return cls(
            sender=sender,
            envelope_from=data.get("envelope_from") or parseaddr(sender)[1],
            files=dict(data.get("files") or {}),
            waves={name: FrozenEmail.from_json(email) for name, email in (data.get("waves") or {}).items()},
            track_clicks=bool(data.get("track_clicks")),
            track_opens=bool(data.get("track_opens")),
            links=tuple(data.get("links") or ()),
            reward=FrozenReward.from_json(data.get("reward")),
            language=data.get("language") or SOURCE_LANGUAGE,
            variants={
                lang: {name: FrozenEmail.from_json(email) for name, email in emails.items()}
                for lang, emails in (data.get("variants") or {}).items()
            },
        )

    @classmethod
    def of(cls, campaign: Campaign) -> FrozenCampaign:
        """The campaign's frozen content, read from its ``compiled`` column."""
        return cls.from_json(campaign.compiled or {})
