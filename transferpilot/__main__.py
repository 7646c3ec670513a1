"""``python -m transferpilot``: the command line (how torchrun starts each training rank)."""

from transferpilot.cli import main

main()
