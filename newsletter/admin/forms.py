"""Forms of /admin (Flask-WTF: every POST carries the CSRF token tied to the session)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField
from wtforms.validators import InputRequired, Length


class LoginForm(FlaskForm):
    email = EmailField("Email address", validators=[InputRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=1024)])
    next = HiddenField()


class ActionForm(FlaskForm):
    """Pause, resume, sign out: nothing but the CSRF token."""


class CancelForm(FlaskForm):
    #: without JavaScript there is no confirm dialog: the box is the confirmation (checked by the view,
    #: so that a cancel without it gets our sentence rather than the browser's bubble)
    confirm = BooleanField("Yes, stop this campaign for good")
