"""The store's JSON API: bearer token (``NEWSLETTER_API_TOKEN``), no cookies, no CSRF."""
