"""tape: the centre. Bayeux codec, channel patterns, the tape store, JSONL form and the CLI root."""
