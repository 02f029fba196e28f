"""`convbench tb` as a server process: TensorBoard on a real run folder, reached over its HTTP API
on 127.0.0.1 only. What `tb` refuses is tested in this process in tests/unit/test_tensorboard.py;
what a person sees of it in a browser, in test_browser.py."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.inprocess import convbench

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def outputs(mnist_root, tmp_path_factory) -> Path:
    """An outputs/ folder holding one finished run, made by `convbench train` (in this process)."""
    work = tmp_path_factory.mktemp("tb")
    run_dir = work / "outputs" / "run_a"
    result = convbench(
        "train", *tiny_mnist_overrides(mnist_root), ONE_THREAD, f"hydra.run.dir={run_dir}", cwd=work
    )
    assert result.code == 0, result.stderr
    return work / "outputs"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def wait_for_runs(proc: subprocess.Popen, port: int, deadline_s: float = 30) -> list[str]:
    """Poll /data/runs until TensorBoard lists a run (it loads event files in the background)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"convbench tb exited early: {proc.communicate()}"
        try:
            runs = get_json(port, "/data/runs")
            if runs:
                return runs
        except OSError:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(f"TensorBoard did not list any run within {deadline_s} s")


def test_tb_serves_the_runs_scalars_on_loopback(outputs):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convbench", "tb", str(outputs), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert wait_for_runs(proc, port) == ["run_a"]
        query = urllib.parse.urlencode({"run": "run_a", "tag": "val/acc"})
        points = get_json(port, f"/data/plugin/scalars/scalars?{query}")
    finally:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=10)
    history = json.loads((outputs / "run_a" / "metrics.json").read_text())["history"]
    assert [step for _, step, _ in points] == [epoch["step"] for epoch in history]
    assert [value for _, _, value in points] == pytest.approx([e["val_acc"] for e in history])
    assert f"http://{LOOPBACK}:{port}/" in stdout, stdout + stderr
