"""One module per command of the CLI: its options (Typer), the library call, the rendering.

Each module imports only Typer and the standard library at the top, so `convbench --help` and
shell completion stay fast; torch, Hydra and TensorBoard are imported inside the commands.
"""
