"""Campaign files: load, validate and render ``campaigns/<slug>/`` folders."""
