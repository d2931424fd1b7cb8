"""A real Ray cluster started by `ray start`, as a user would: two nodes on this machine (one CPU
each), and a one-node cluster with logical GPUs on a machine without CUDA. Each test starts its
nodes with `--block` and stops exactly those processes, by process id (a blocking `ray start`
stops the node's processes when it is terminated)."""
from __future__ import annotations

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TINY = "train: {epochs: 2}\nsurrogate: {epochs: 1}\nsmoothing: {chunk: 10, sigma_draws: 5}\n"
VOLATILE = ("created", "timings", "command", "execution", "environment")

pytestmark = pytest.mark.slow


# the test's nodes, its driver and the runs share one setting (token auth needs a token on every
# node; this cluster listens on 127.0.0.1 only and lives for one test)
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


class Cluster:
    def __init__(self, tmp: Path, env: dict | None = None):
        self.env = env or ENV  # of its nodes and of `wait_for`'s driver
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.tmp = tmp
        # Ray's socket paths must stay under 107 bytes: pytest's tmp_path is too deep
        self.ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        self.procs: list[subprocess.Popen] = []

    def node(self, *args: str, head: bool = False) -> None:
        cmd = [_ray(), "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args]
        cmd += (["--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir",
                 self.ray_tmp] if head else ["--address", self.address])
        log = open(self.tmp / f"node{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          env=self.env))

    def wait_for(self, nodes: int) -> None:
        code = (f"import ray, time\nray.init(address='{self.address}', log_to_driver=False)\n"
                f"t = time.time()\nwhile len([n for n in ray.nodes() if n['Alive']]) < {nodes}:\n"
                f"    assert time.time() - t < 120\n    time.sleep(0.5)\n")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=self.env)
        assert all(p.poll() is None for p in self.procs), self._logs()
        assert res.returncode == 0, res.stderr[-2000:] + self._logs()

    def _logs(self) -> str:
        return "".join(p.read_text()[-2000:] for p in sorted(self.tmp.glob("node*.log")))

    def stop(self) -> None:
        for p in reversed(self.procs):  # workers first, then the head
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)  # its own session: only what it started
                    p.wait()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


def _certify(tmp_path: Path, name: str, *extra: str, env: dict = ENV) -> subprocess.CompletedProcess:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    return subprocess.run([sys.executable, "-m", "certify.cli", "--quiet", "run", "--poison", "random,em",
                          "--dataset", "digits", "--config", str(cfg), "--samples", "40", "--skip", "scores,recovery",
                          "--seed", "5", "--out", str(tmp_path / name), "--cache-dir", str(tmp_path / f"{name}-cache"),
                          *extra], capture_output=True, text=True, timeout=900, env=env)


def _run(tmp_path: Path, name: str, *extra: str, env: dict = ENV) -> dict:
    res = _certify(tmp_path, name, *extra, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp_path / name / "report.json").read_text())


def _numbers(report: dict) -> dict:
    r = {k: v for k, v in report.items() if k not in VOLATILE}
    r["config"] = {k: v for k, v in r["config"].items() if k not in ("out", "cache_dir", "executor", "address")}
    return r


def test_two_node_cluster_runs_tasks_on_both_and_equals_serial(tmp_path, cluster):
    cluster.node("--num-cpus", "1", head=True)
    cluster.node("--num-cpus", "1")
    cluster.wait_for(2)
    on_cluster = _run(tmp_path, "cluster", "--address", cluster.address)
    nodes = {t["node"] for t in on_cluster["execution"]["tasks"]}
    assert len(nodes) == 2 and "driver" not in nodes, nodes
    serial = _run(tmp_path, "serial", "--executor", "serial")
    assert _numbers(on_cluster) == _numbers(serial)
    procs = list(cluster.procs)
    cluster.stop()
    assert all(p.poll() is not None for p in procs)


def test_gpu_tasks_ask_for_their_fraction_and_run_without_cuda(tmp_path, cluster):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks logical GPUs on a machine without CUDA")
    cluster.node("--num-cpus", "2", "--num-gpus", "2", head=True)
    cluster.wait_for(1)
    report = _run(tmp_path, "gpu", "--address", cluster.address)
    tasks = report["execution"]["tasks"]
    assert tasks and all(t["resources"] == {"CPU": 1, "GPU": 0.25} for t in tasks)
    assert all(len(t["gpus"]) == 1 and t["gpus"][0] in ("0", "1") for t in tasks)  # placed on a GPU
    assert report["config"]["gpu_fraction"] == 0.25
    assert report["poisons"]["random"]["certificate"]["samples"] == 40  # and it ran, on the CPU


def test_joins_a_token_protected_cluster_and_records_its_cpus(tmp_path):
    """Ray's default: a head that finds a token in ~/.ray/auth_token requires it. certify joins with
    the token it finds (no RAY_AUTH_MODE set), records the cluster's one CPU (not this machine's
    cores), and without a token says in one line what to set."""
    home, empty = tmp_path / "home", tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(home)}
    subprocess.run([_ray(), "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
    assert (home / ".ray" / "auth_token").is_file()
    c = Cluster(tmp_path, env | {"RAY_AUTH_MODE": "token"})  # `wait_for`'s own driver sends the token
    c.env = env  # the head: Ray's defaults only
    try:
        c.node("--num-cpus", "1", head=True)
        c.env = env | {"RAY_AUTH_MODE": "token"}
        c.wait_for(1)
        report = _run(tmp_path, "token", "--address", c.address, env=env)
        assert report["environment"]["workers"] == 1
        refused = _certify(tmp_path, "refused", "--address", c.address, "--connect-timeout", "60",
                           env=env | {"HOME": str(empty)})
        assert refused.returncode == 2
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "RAY_AUTH_TOKEN" in lines[0] and "Traceback" not in refused.stderr, refused.stderr
        assert not (tmp_path / "refused").exists()
    finally:
        c.stop()
