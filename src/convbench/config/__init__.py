"""From YAML to a checked config: the typed schema under conf/ (schema), composing configs
outside a run and wording config errors (compose), what `auto` settings become (auto), and
which code a config read back from disk may name (trust)."""
