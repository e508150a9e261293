"""Deliverability: what happens after the relay said 250 (bounces, complaints, webhooks, protection)."""
