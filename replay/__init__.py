"""replay: re-emit a tape to clients under test (not built yet)."""
