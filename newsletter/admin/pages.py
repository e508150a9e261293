"""Imports every dashboard page module so that its views are on the blueprint before it is registered."""

import newsletter.admin.people  # noqa: F401, E402 - subscribers, suppressions, partners
