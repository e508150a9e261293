"""Imports every dashboard page module so that its views are on the blueprint before it is registered."""

from newsletter.admin import overview  # noqa: F401
