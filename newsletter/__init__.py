"""newsletter: an opt-in email marketing engine for online stores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Flask is imported when an app is built, not by every ``newsletter`` command
    from flask import Flask

    from newsletter.web import App


def create_app(test_config: dict[str, Any] | None = None) -> App:
    """Build the web application from defaults, instance/config.toml and NEWSLETTER_* variables."""
    from newsletter.core.runtime import default_instance_path
    from newsletter.mail.templates import TEMPLATES
    from newsletter.web import App, setup

    app = App(
        __name__,
        instance_path=str(default_instance_path().resolve()),
        template_folder=str(TEMPLATES),
    )
    setup(app, test_config)
    _register_blueprints(app)
    return app


def _register_blueprints(app: Flask) -> None:
    """The features' pages and API routes (web/ sets the app up and knows no feature)."""
    from newsletter.admin import views as admin_views
    from newsletter.campaigns import api as campaigns_api  # noqa: F401  (routes on the store API)
    from newsletter.customers import api as customers_api  # noqa: F401  (routes on the store API)
    from newsletter.early_access import api as early_access_api  # noqa: F401  (routes on the store API)
    from newsletter.early_access import views as early_access_views  # noqa: F401  (public routes)
    from newsletter.feedback.views import bp as tracking_bp
    from newsletter.feedback.webhooks import bp as webhooks_bp
    from newsletter.partners.api import bp as partners_api_bp
    from newsletter.store_events import api as store_events_api  # noqa: F401  (routes on the store API)
    from newsletter.subscribers import manage  # noqa: F401  (routes on the public blueprint)
    from newsletter.subscribers.views import bp as public_bp
    from newsletter.web import csrf
    from newsletter.web.api import bp as api_bp

    app.register_blueprint(public_bp)
    admin_views.init_app(app)  # /admin: accounts, sessions, roles (docs/dashboard.md)
    app.register_blueprint(tracking_bp)  # /c/<token>/<n> and /o/<token>: GET only
    app.register_blueprint(csrf.exempt(partners_api_bp))  # signed requests, no cookies
    app.register_blueprint(api_bp)
    app.register_blueprint(csrf.exempt(webhooks_bp))  # signed by the provider, no cookies
    csrf.exempt(api_bp)  # bearer token, no cookies: nothing for a forged request to ride on
