"""Subscribers: signup, confirmation, preferences, consent, suppression, limits, imports and data rights."""
