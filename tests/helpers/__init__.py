"""Helpers shared by the tests: tiny datasets in the real formats, running the CLI as a user
does, composing configs. Test modules import from here, never from each other."""
