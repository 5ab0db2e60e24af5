"""Constants every test shares: one timeout that every wait scales from, and paths."""

from __future__ import annotations

import os
from pathlib import Path

TIMEOUT = float(os.environ.get("COMETD_TAPE_TEST_TIMEOUT", "10"))
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "gws-dnc.jsonl"
