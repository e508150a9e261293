"""Imports every dashboard page module so that its views are on the blueprint before it is registered."""

import newsletter.admin.files  # noqa: F401
import newsletter.admin.overview  # noqa: F401
import newsletter.admin.people  # noqa: F401
