"""Forms of the public pages (Flask-WTF: CSRF on every POST).

Labels and messages are lazy (``lazy_gettext``): a form class is built once, at import, and each
request reads its words in the page's language (docs/languages.md).
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    widgets,
)
from wtforms.validators import InputRequired, Length, Optional, ValidationError

from newsletter.subscribers.names import MAX_LENGTH, form_problem

#: what the forms say about a first name ``names.name_problem`` refuses
NAME_MESSAGES = {
    "length": _("Please keep your first name to at most %(count)s characters.", count=MAX_LENGTH),
    "characters": _("Please write your first name on one line, without line breaks or special characters."),
}


def valid_first_name(_form, field) -> None:
    """The service's own rule (services.names), so the form and every other path agree."""
    if field.data and (problem := form_problem(field.data)):
        raise ValidationError(NAME_MESSAGES[problem])


class CheckboxesField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


def at_least_one_topic(_form, field) -> None:
    if not field.data:
        raise ValidationError(_("Please choose at least one topic."))


class SubscribeForm(FlaskForm):
    email = StringField(
        _("Email address"),
        validators=[InputRequired(_("Please enter your email address.")), Length(max=320)],
    )
    first_name = StringField(_("First name (optional)"), validators=[Optional(), valid_first_name])
    topics = CheckboxesField(_("What would you like to hear about?"), choices=[])
    #: optional, one per partner store, never pre-ticked; effective once the address is confirmed
    partners = CheckboxesField(_("Partner stores (optional)"), choices=[])
    #: honeypot: hidden from people, filled in by bots
    website = StringField(_("Leave this field empty"), validators=[Optional()])

    def validate_topics(self, field) -> None:
        at_least_one_topic(self, field)


class JoinForm(FlaskForm):
    """An order invitation's page: the person ticks topics (none pre-ticked) and joins."""

    topics = CheckboxesField(_("What would you like to hear about?"), choices=[])

    def validate_topics(self, field) -> None:
        at_least_one_topic(self, field)


class ConfirmForm(FlaskForm):
    """One button; the token is in the URL."""


class ResendForm(FlaskForm):
    """Ask for a fresh confirmation link after the old one expired."""


class LinksForm(FlaskForm):
    """ "Send me my links": an address, and an email with the preference centre's link if we know it."""

    email = StringField(
        _("Email address"),
        validators=[InputRequired(_("Please enter your email address.")), Length(max=320)],
    )


FREQUENCY_CHOICES = [
    SelectChoice("any", _("Whenever there is news (we never send more than a few a week)")),
    SelectChoice("weekly", _("At most once a week")),
    SelectChoice("monthly", _("At most once a month")),
]
PAUSE_CHOICES = [
    SelectChoice("", _("Don't pause")),
    SelectChoice("1", _("Pause for 1 week")),
    SelectChoice("2", _("Pause for 2 weeks")),
    SelectChoice("4", _("Pause for 4 weeks")),
]


class PreferencesForm(FlaskForm):
    topics = CheckboxesField(_("What would you like to hear about?"), choices=[])
    frequency = RadioField(_("How often may we write?"), choices=FREQUENCY_CHOICES, default="any")
    pause = SelectField(_("Pause emails"), choices=PAUSE_CHOICES, default="")
    resume = BooleanField(_("Resume now"))
    time_zone = SelectField(_("Your time zone (we never write at night)"), choices=[])
    first_name = StringField(_("First name"), validators=[Optional(), valid_first_name])
    partners = CheckboxesField(_("Partner stores"), choices=[])
    # not sent by an older copy of the page: the stored language stays (the view checks the value)
    language = SelectField(_("Language"), choices=[], validate_choice=False)


class UnsubscribeForm(FlaskForm):
    """The visible page's form; the RFC 8058 one-click POST carries no CSRF token at all."""

    scope = RadioField(
        _("Unsubscribe from"),
        choices=[SelectChoice("topic"), SelectChoice("everything")],
        default="everything",
    )


class EraseForm(FlaskForm):
    """One button: erase everything held about me."""
