"""Pin the numbers of a small smoke job on this machine's CPU in ``smoke_pin.json``.

Run on purpose only, when a change is meant to change results:

    python tests/golden/make_smoke_pin.py           # add or replace this CPU's pin
    python tests/golden/make_smoke_pin.py --reset   # drop every other CPU's pin first

``tests/test_golden.py`` compares every later run on a pinned CPU with its pin. After a
change meant to change results, the other CPUs' pins are stale: ``--reset`` drops them
(they can only be remade on their own CPUs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.golden.smoke import PIN, cpu_signature, smoke_numbers  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reset", action="store_true", help="drop the other CPUs' pins")
    args = parser.parse_args()
    pins = {} if args.reset or not PIN.is_file() else json.loads(PIN.read_text())["pins"]
    with tempfile.TemporaryDirectory() as tmp:
        pins[cpu_signature()] = smoke_numbers(Path(tmp))
    PIN.write_text(json.dumps({"pins": pins}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PIN}: pins for {sorted(pins)}")
