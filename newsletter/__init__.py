"""newsletter: an opt-in email marketing engine for online stores."""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web application from defaults, instance/config.toml and NEWSLETTER_* variables."""
    from newsletter.core.runtime import default_instance_path
    from newsletter.mail.templates import TEMPLATES
    from newsletter.web import setup

    app = Flask(
        __name__,
        instance_path=str(default_instance_path().resolve()),
        template_folder=str(TEMPLATES),
    )
    setup(app, test_config)
    return app
