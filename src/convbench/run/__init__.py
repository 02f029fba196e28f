"""One run in its folder: every object built from the config (build, the only instantiate), the
run's life from start or resume to metrics.json (lifecycle), checkpoints (checkpoint), the folder
and its one meaning of "finished" (folder), robustness at the end (robustness), and what the
run's processes share (ranks) and hear from outside (signals)."""
