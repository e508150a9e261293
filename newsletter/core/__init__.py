"""Infrastructure every feature shares: settings, database, clock, runtime (Redis, queues), migrations."""
