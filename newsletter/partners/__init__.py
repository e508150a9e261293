"""Partner stores: registry, signed list and suppression exchange, the partner API and commands.

See docs/partners.md for the file format, signatures, API authentication and replay rules.
"""
