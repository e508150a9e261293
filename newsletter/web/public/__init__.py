"""Pages subscribers see: signup and confirmation."""
