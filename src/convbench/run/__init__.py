"""One run in its folder."""
