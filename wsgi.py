"""WSGI entry point: ``gunicorn wsgi:app``."""

import logging

from newsletter import create_app
from newsletter.core.config import example_identity

app = create_app()
for problem in example_identity(app.settings):  # fine for a first try, not for a store's mail
    name = problem.split()[0]
    logging.getLogger("newsletter").warning("%s: set NEWSLETTER_%s to the store's own", problem, name)
