"""The templates (email/, web/), shipped inside the engine as the package ``newsletter.templates``.

pyproject.toml maps this folder to that package so that it stays where it is in the repository
and still installs with the code (``newsletter.mail.templates.TEMPLATES`` finds it).
"""
