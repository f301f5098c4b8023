"""A throwaway single-node Ray cluster on loopback, for tests and benchmarks.

``local_cluster()`` runs ``ray start --head --block`` in a session of its own (so the
head, its raylet and every worker it spawns share one process group), waits until the
cluster is up and yields its address; on exit it stops exactly that process group, never
other Ray clusters of the same user (``ray stop`` would stop them all).

Real clusters are started with ``ray start`` by hand or from a batch script: see the
README section "Collecting on a Ray cluster".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from qbayes.errors import QBayesError

READY = "Ray runtime started"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_command() -> list[str]:
    """The ``ray`` command of the running interpreter's environment."""
    script = Path(sys.executable).with_name("ray")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ray.scripts.scripts"]


@contextlib.contextmanager
def local_cluster(*, num_cpus: int = 2, num_gpus: int = 0, timeout_s: float = 120.0) -> Iterator[str]:
    """Start a head node on 127.0.0.1 with ``num_cpus`` CPUs; yields ``"127.0.0.1:PORT"``."""
    # unix socket paths must stay short: a temp dir directly under /tmp
    temp = Path(tempfile.mkdtemp(prefix="qbray-", dir="/tmp"))
    port = free_port()
    cmd = [
        *ray_command(),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        "--include-dashboard=false",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    log_path = temp / "ray-start.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
    try:
        deadline = time.monotonic() + timeout_s
        while READY not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise QBayesError(f"could not start a local Ray cluster ({' '.join(cmd)}):\n{tail}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _stop(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGTERM the cluster's process group, SIGKILL it after ``grace_s`` (a graceful
    ``ray start --block`` shutdown takes half a minute). Workers, in sessions of their
    own, exit when their raylet is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
