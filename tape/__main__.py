"""`python -m tape` runs the cometd-tape CLI."""

from tape.cli import main

main()
