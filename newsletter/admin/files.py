"""/admin/files: the campaign folders with their problems, and previews of one folder's email.

Read only: nothing here writes a file. Each folder is validated by ``campaigns/folders.py`` with
the code ``newsletter campaign validate`` runs. The email is shown in sandboxed frames loaded from
``preview.html``, which carries its own CSP: the email's inline styles and https images, never a
script (a srcdoc frame would inherit the page's CSP, which lets no inline style through).
"""

from __future__ import annotations

from pathlib import Path

from flask import abort, current_app, make_response, render_template, request

from newsletter.admin import auth
from newsletter.admin.blueprint import bp
from newsletter.campaigns import folders
from newsletter.campaigns.preview import WIDTHS
from newsletter.campaigns.site import (
    SiteContext,
    retired_from_db,
    site_context,
    topics_from_db,
    translations_from_db,
)
from newsletter.models import Role
from newsletter.web import db
from newsletter.web.security import CSP, csp_nonce

#: the frame's own policy: the email's inline styles and remote https images, nothing that runs;
#: ``sandbox`` gives it an opaque origin (no cookies, no forms, no scripts), framed by us only
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; font-src https: data:; "
    "form-action 'none'; base-uri 'none'; sandbox allow-popups allow-popups-to-escape-sandbox; "
    "frame-ancestors 'self'"
)


def _site() -> SiteContext:
    return site_context(
        current_app.settings, topics_from_db(db()), retired_from_db(db()), translations_from_db(db())
    )


def _root() -> Path:
    return Path(current_app.settings.campaigns_dir)


def _state(name: str, site: SiteContext) -> folders.FolderState:
    folder = folders.find_folder(_root(), name)
    if folder is None:
        abort(404, f"There is no campaign folder {name!r} in {_root()}.")
    return folders.folder_state(db(), site, folder)


def _language(state: folders.FolderState) -> str | None:
    """The variant asked for (?language=de), else None (the default email); one the folder lacks is a 404."""
    asked = request.args.get("language")
    if asked is None or state.report.campaign is None:
        return None
    if asked not in state.report.languages:
        abort(404, f"{state.name} has no email in {asked!r}.")
    return asked


def _wave(state: folders.FolderState, language: str | None = None) -> str | None:
    """The email asked for (?wave=NAME), else the first; a wave without an email of its own is a 404."""
    emails = list(state.report.emails_in(language))
    asked = request.args.get("wave")
    if asked is None:
        return emails[0] if emails else None
    if asked not in emails:
        abort(404, f"{state.name} has no email of its own for the wave {asked!r}.")
    return asked


@bp.get("/files")
@auth.requires(Role.VIEWER)
def files():
    states = folders.folder_states(db(), _site(), _root())
    return render_template("web/admin/files.html", states=states, root=_root())


@bp.get("/files/<name>")
@auth.requires(Role.VIEWER)
def file(name: str):
    site = _site()
    state = _state(name, site)
    language = _language(state)
    wave = _wave(state, language)
    subject = folders.preview_subject(state.report, site, wave, language)
    page = render_template(
        "web/admin/file.html",
        state=state,
        wave=wave,
        language=language,
        emails=state.report.emails_in(language),
        subject=subject,
        widths=WIDTHS,
    )
    response = make_response(page)
    # this page frames its own previews (the default policy's default-src 'none' would refuse them)
    policy = CSP.format(style=f"'nonce-{csp_nonce()}'")
    response.headers["Content-Security-Policy"] = f"{policy}; frame-src 'self'"
    return response


@bp.get("/files/<name>/preview.html")
@auth.requires(Role.VIEWER)
def file_preview(name: str):
    """The rendered email alone, for the frames of the folder's page."""
    site = _site()
    state = _state(name, site)
    language = _language(state)
    wave = _wave(state, language)
    try:
        html = folders.preview_html(state.report, site, wave, language) if state.report.ok else None
    except ValueError as exc:  # a header the message builder refuses (HeaderInjection): no email to show
        abort(404, f"{name} cannot be previewed: {exc}")
    if html is None:
        abort(404, f"{name} does not render; its page lists the problems.")
    response = make_response(html)
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response
