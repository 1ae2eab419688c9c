"""Results stay bit-identical on one machine: a small smoke job gives exactly the numbers
pinned for this CPU in tests/golden/smoke_pin.json (made by tests/golden/make_smoke_pin.py
on purpose, when a change is meant to change results)."""

import json

import pytest

from tests.golden.smoke import PIN, cpu_signature, smoke_numbers


def test_smoke_job_gives_the_pinned_numbers(tmp_path):
    pins = json.loads(PIN.read_text())["pins"]
    cpu = cpu_signature()
    if cpu not in pins:
        pytest.skip(f"no pin for {cpu} (floats differ across CPUs); pinned: {sorted(pins)}")
    assert smoke_numbers(tmp_path) == pins[cpu]
