"""Results stay bit-identical on one machine: a small smoke job gives exactly the numbers
pinned in tests/golden/smoke_pin.json (made by tests/golden/make_smoke_pin.py on purpose,
when a change is meant to change results)."""

import json

import pytest

from tests.golden.smoke import PIN, cpu_signature, smoke_numbers


def test_smoke_job_gives_the_pinned_numbers(tmp_path):
    pin = json.loads(PIN.read_text())
    if pin["cpu"] != cpu_signature():
        pytest.skip(f"pinned on {pin['cpu']}; floats differ on {cpu_signature()}")
    assert smoke_numbers(tmp_path) == pin["numbers"]
