"""The marketer's side: /admin, for the store's own people (accounts, roles, campaigns)."""
