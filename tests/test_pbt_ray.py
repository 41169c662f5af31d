"""AutoLFADS on Ray, end to end (tiny model, population 3, a few generations): the same
population as in-process training, a kill -9 of the driver resumed at the last generation, a
worker killed mid-generation replaced, and a cluster started apart joined by address."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
sys.path.insert(0, str(Path(__file__).parent))
from test_pbt import _spec as tiny_spec  # noqa: E402 - the tiny population spec of the AutoLFADS tests

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg",
       "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
ENV.pop("RAY_ADDRESS", None)


def _spec(tmp_path: Path, name: str, **pbt) -> Path:
    """The tiny population of test_pbt on an embedded Ray (2 epochs a generation, 4 generations)."""
    path, _ = tiny_spec(tmp_path, {"generation_epochs": 2, "burn_in_epochs": 0, "max_generations": 4,
                                   "resources": {"cpu": 1}, "address": None, **pbt}, name=name)
    return path


def _rows(run: Path) -> list[tuple]:
    with open(run / "pbt.csv") as f:
        return [(r["member"], r["generation"], r["fitness"], r["train.lr"]) for r in csv.DictReader(f)]


def _start(spec: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lfads_core.cli", str(spec), *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(proc: subprocess.Popen, needle: str, timeout: float = 120) -> list[str]:
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen:\n{''.join(lines)}")


def _cleanup(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver's Ray processes too
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_ray_population_equals_local_and_resumes_after_kill_9(tmp_path):
    local = _spec(tmp_path, "local", address="local")
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", str(local)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    spec = _spec(tmp_path, "ray")
    proc = _start(spec)
    try:
        lines = _wait_for(proc, "generation 2/4")
        assert any("Ray: 2 workers of 1 CPU" in line for line in lines), "".join(lines)
        os.kill(proc.pid, signal.SIGKILL)  # the driver, mid-run
        proc.wait(timeout=30)
    finally:
        _cleanup(proc)
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", str(spec)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming the population" in res.stdout and "generation 1/4" not in res.stdout
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")  # same members, same numbers


def test_a_killed_worker_is_reported_and_replaced(tmp_path):
    spec = _spec(tmp_path, "kill", generation_epochs=6, max_generations=3)
    proc = _start(spec)
    try:
        lines = _wait_for(proc, "Ray: ")
        pids = [int(p) for p in lines[-1].split("worker pids ")[1].rstrip(")\n").split(", ")]
        lines += _wait_for(proc, "generation 1/3")
        os.kill(pids[0], signal.SIGKILL)  # a worker, during generation 2
        out, _ = proc.communicate(timeout=240)
    finally:
        _cleanup(proc)
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    assert "failed in generation 2: its Ray worker died" in text
    assert "generation 3/3" in text and (tmp_path / "kill" / "lfads_output.h5").exists()
    with open(tmp_path / "kill" / "pbt.csv") as f:  # the rebuilt members went on as clones
        last = {r["epoch"] for r in csv.DictReader(f) if r["generation"] == "3"}
    assert len(last) == 1, last


def test_joins_a_cluster_started_apart(tmp_path):
    ray_bin = Path(sys.executable).with_name("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        spec = _spec(tmp_path, "joined", max_generations=2)
        deadline = time.monotonic() + 60
        while True:
            res = subprocess.run([sys.executable, "-m", "lfads_core.cli", str(spec), "--address",
                                  f"127.0.0.1:{port}"], env=ENV, capture_output=True, text=True, timeout=300)
            starting = "cannot start or join" in res.stderr or "no Ray cluster answers" in res.stderr
            if res.returncode == 0 or time.monotonic() > deadline or not starting:
                break
            time.sleep(2)  # the head is still starting
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"at 127.0.0.1:{port}" in res.stdout and "generation 2/2" in res.stdout
    finally:
        _cleanup(head)


def test_stacked_engine_on_ray_workers(tmp_path):
    """Each of 2 workers trains its members as one stacked group (4 members: 2 per worker)."""
    spec = _spec(tmp_path, "stacked", population=4, max_generations=2, engine="stacked")
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", str(spec)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Ray: 2 workers of 1 CPU" in res.stdout and "engine stacked" in res.stdout
    assert "warning" not in res.stdout + res.stderr
    rows = _rows(tmp_path / "stacked")
    assert [(int(m), int(g)) for m, g, _, _ in rows] == [(m, g) for g in (1, 2) for m in range(4)]
    assert all(float(f) < float("inf") for _, _, f, _ in rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_that_does_not_answer_is_one_line_before_anything_is_written(tmp_path):
    """ray.init retried for minutes at an address where nothing listens, deaf to Ctrl-C (QA);
    the address comes from --address or RAY_ADDRESS and the error says which."""
    spec = _spec(tmp_path, "nowhere")
    port = _free_port()
    cases = [([str(spec), "--address", f"127.0.0.1:{port}"], {}, "pbt.address"),
             ([str(spec)], {"RAY_ADDRESS": f"127.0.0.1:{port}"}, "RAY_ADDRESS"),
             (["validate", str(spec)], {"RAY_ADDRESS": f"127.0.0.1:{port}"}, "RAY_ADDRESS")]
    for args, env, source in cases:
        start = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "lfads_core.cli", *args], env={**ENV, **env},
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        assert res.stderr.startswith(f"error: {source}: no Ray cluster answers at 127.0.0.1:{port}"), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert time.monotonic() - start < 60
        assert not (tmp_path / "nowhere").exists()


def test_validate_names_the_cluster_of_ray_address(tmp_path):
    spec = _spec(tmp_path, "env")
    with socket.socket() as listener:  # something answers there
        listener.bind(("0.0.0.0", 0))  # Ray resolves 127.0.0.1 to this machine's address
        listener.listen()
        port = listener.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(spec)],
                             env={**ENV, "RAY_ADDRESS": f"127.0.0.1:{port}"}, capture_output=True,
                             text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Ray: 127.0.0.1:{port} (from RAY_ADDRESS)" in res.stdout
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(spec)], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert "Ray: embedded" in res.stdout and "1 thread per member, pbt.resources.cpu" in res.stdout
