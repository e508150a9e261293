"""Everything that reaches a mailbox: one message builder, one transport interface."""
