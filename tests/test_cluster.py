"""The README's cluster recipe, as written, on a real two-node Ray cluster on this machine:
`ray start` twice (a head and a second node, one CPU each), then `ray job submit` of the
smoke grid with shared storage for trial checkpoints."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
EXCLUDES = '{"excludes": [".git", ".venv", ".kdbench", "results"]}'  # as the README says


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_nodes(address: str, count: int, env: dict, timeout: float = 60) -> None:
    script = f"import ray; ray.init(address='{address}'); print(len(ray.nodes()))"
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env
        ).stdout
        if out.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes")


@pytest.fixture
def two_node_cluster():
    """A head and a second node, each `ray start --block` in its own session, stopped
    (second node first) by signalling their own processes only."""
    port, dashboard = free_port(), free_port()
    # each node its own temp folder, as on two machines (short: Ray's socket paths); a
    # shared one would let the second node clean up the job's working directory
    temps = [tempfile.mkdtemp(prefix="ray", dir="/tmp") for _ in range(2)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    # two nodes on one machine: each node's agent needs a port of its own
    agents = [f"--dashboard-agent-listen-port={free_port()}" for _ in range(2)]
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--temp-dir={temps[0]}",
            agents[0],
            *common,
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(5)
    node = subprocess.Popen(
        [RAY, "start", f"--address=127.0.0.1:{port}", agents[1], f"--temp-dir={temps[1]}", *common],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_nodes(f"127.0.0.1:{port}", 2, env)
        yield f"http://127.0.0.1:{dashboard}", env, Path(temps[0])
    finally:
        for process in (node, head):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_job_submit_runs_the_smoke_grid_on_both_nodes(two_node_cluster, tmp_path):
    address, env, head_temp = two_node_cluster
    shared = tmp_path / "shared"  # on a real cluster: storage every node mounts
    command = [
        RAY,
        "job",
        "submit",
        f"--address={address}",
        "--working-dir",
        ".",
        "--runtime-env-json",
        EXCLUDES,
        "--",
        "env",
        "KDBENCH_GIT_COMMIT=c0ffee1",
        "python",
        "bench/run.py",
        "profile=smoke",
        "variants=[baseline,pmd]",
        "seeds=[0,1]",
        "budget.steps=60",  # long enough trials for both nodes to take some
        f"ray.storage={shared / 'ray'}",
        f"work_dir={shared / 'work'}",
        f"results_dir={shared / 'results'}",
    ]
    for _ in range(30):  # the head's job agent takes a while to come up
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        if "No available agent" not in done.stderr:
            break
        time.sleep(3)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    # the upload stays small: no .git, virtual environment, caches or results
    files = head_temp.glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*")
    uploads = [u for u in files if u.is_dir()]
    size = sum(f.stat().st_size for u in uploads for f in u.rglob("*") if f.is_file())
    assert len(uploads) == 1 and size < 2 * 1024**2, (uploads, size)
    assert not {".git", ".venv", ".kdbench", "results"} & {p.name for p in uploads[0].iterdir()}
    tables = list((shared / "results").rglob("trials.csv"))
    assert len(tables) == 1
    provenance = json.loads((tables[0].parent / "provenance.json").read_text())
    assert provenance["commit"].startswith("c0ffee1")
    trials = pd.read_csv(tables[0])
    assert len(trials) == 4 and trials["dice"].notna().all()
    assert trials["node"].nunique() == 2  # trials ran on both nodes
    checkpoints = list((shared / "ray").rglob("checkpoint_*"))
    assert checkpoints  # trial checkpoints went to the shared storage
    assert len(list((shared / "ray").rglob("trial.log"))) == 4  # from both nodes
