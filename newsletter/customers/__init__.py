"""Customer data from the store: records, their upsert, the API route and the command."""
