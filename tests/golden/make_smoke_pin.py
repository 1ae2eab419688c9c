"""Write ``smoke_pin.json``: the numbers of a small smoke job on this machine's CPU.

Run on purpose only (``python tests/golden/make_smoke_pin.py``), when a change is meant
to change results; ``tests/test_golden.py`` compares every later run with it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.golden.smoke import PIN, cpu_signature, smoke_numbers  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        numbers = smoke_numbers(Path(tmp))
    PIN.write_text(json.dumps({"cpu": cpu_signature(), "numbers": numbers}, indent=1) + "\n")
    print(f"wrote {PIN}")
