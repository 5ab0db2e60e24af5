"""analysis: SQL views and latency statistics over tapes (not built yet)."""
