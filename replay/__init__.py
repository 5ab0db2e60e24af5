"""replay: re-emit a tape to clients under test (`replay`, the pytest fixture, the simulator)."""
