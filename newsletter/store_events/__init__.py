"""Store events (orders, stock) in, store mail out through the transactional outbox."""
