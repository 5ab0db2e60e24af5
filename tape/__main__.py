"""`python -m tape` runs the cometd-tape CLI."""

from tape.cli import main

if __name__ == "__main__":  # a spawned child process (the tape writer) imports this too
    main()
