"""Around runs: `convbench train`'s Hydra application and callback (app, callback), the checks
before a run starts (preflight), sweeps read back from their folders and resumed (sweeps), and
the processes of one run started on this machine (distributed)."""
