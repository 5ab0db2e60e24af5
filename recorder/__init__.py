"""recorder: capture CometD traffic into a tape (not built yet)."""
