"""What a run shows while it trains: the TensorBoard event log (eventlog), the pictures logged to
it (pictures), the progress bar and the console's log lines (console)."""
