"""recorder: capture CometD traffic into a tape, as a client (`record`) or a proxy (`proxy`)."""
