"""Forms of the public pages (Flask-WTF: CSRF on every POST)."""

from __future__ import annotations

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

from newsletter.subscribers.names import form_message


def valid_first_name(_form, field) -> None:
    """The service's own rule (services.names), so the form and every other path agree."""
    if field.data and (message := form_message(field.data)):
        raise ValidationError(message)


class CheckboxesField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class SubscribeForm(FlaskForm):
    email = StringField(
        "Email address", validators=[InputRequired("Please enter your email address."), Length(max=320)]
    )
    first_name = StringField("First name (optional)", validators=[Optional(), valid_first_name])
    topics = CheckboxesField("What would you like to hear about?", choices=[])
    #: optional, one per partner store, never pre-ticked; effective once the address is confirmed
    partners = CheckboxesField("Partner stores", choices=[])
    #: honeypot: hidden from people, filled in by bots
    website = StringField("Leave this field empty", validators=[Optional()])

    def validate_topics(self, field) -> None:
        if not field.data:
            raise ValidationError("Please choose at least one topic.")


class JoinForm(FlaskForm):
    """An order invitation's page: the person ticks topics (none pre-ticked) and joins."""

    topics = CheckboxesField("What would you like to hear about?", choices=[])

    def validate_topics(self, field) -> None:
        if not field.data:
            raise ValidationError("Please choose at least one topic.")


class ConfirmForm(FlaskForm):
    """One button; the token is in the URL."""


class ResendForm(FlaskForm):
    """Ask for a fresh confirmation link after the old one expired."""


FREQUENCY_CHOICES = [
    SelectChoice("any", "Whenever there is news (we never send more than a few a week)"),
    SelectChoice("weekly", "At most once a week"),
    SelectChoice("monthly", "At most once a month"),
]
PAUSE_CHOICES = [
    SelectChoice("", "Don't pause"),
    SelectChoice("1", "Pause for 1 week"),
    SelectChoice("2", "Pause for 2 weeks"),
    SelectChoice("4", "Pause for 4 weeks"),
]


class PreferencesForm(FlaskForm):
    topics = CheckboxesField("Topics", choices=[])
    frequency = RadioField("How often", choices=FREQUENCY_CHOICES, default="any")
    pause = SelectField("Pause", choices=PAUSE_CHOICES, default="")
    resume = BooleanField("Resume now")
    time_zone = SelectField("Time zone", choices=[])
    first_name = StringField("First name", validators=[Optional(), valid_first_name])
    partners = CheckboxesField("Partners", choices=[])
    # not sent by an older copy of the page: the stored language stays (the view checks the value)
    language = SelectField("Language", choices=[], validate_choice=False)


class UnsubscribeForm(FlaskForm):
    """The visible page's form; the RFC 8058 one-click POST carries no CSRF token at all."""

    scope = RadioField(
        "Unsubscribe from", choices=[SelectChoice("topic"), SelectChoice("everything")], default="everything"
    )


class EraseForm(FlaskForm):
    """One button: erase everything held about me."""
