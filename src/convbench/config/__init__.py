"""YAML to a checked config."""
