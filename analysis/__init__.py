"""analysis: SQL views and latency statistics over tapes (`cometd-tape analyze`)."""
