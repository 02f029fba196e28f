"""After the run."""
