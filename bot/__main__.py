"""`python -m bot ...` is the `supportbot` command (for launchers such as torchrun)."""

from bot.cli import main

main()
