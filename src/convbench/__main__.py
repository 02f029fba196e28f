"""`python -m convbench` runs the same CLI as the `convbench` script."""

from convbench.cli import main

main()
