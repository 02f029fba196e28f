"""Sweeps through Hydra's launcher plugins: joblib (jobs side by side on this machine, each on
its share of the cores) and submitit's local executor (jobs in processes of their own, the
same path as SLURM). The failed-jobs summary and the exit code come from the jobs' folders, so
they hold whichever process ran the job."""

import json
import os

import pytest

from helpers.cli import run_cli, tiny_mnist_overrides

pytestmark = pytest.mark.slow


def sweep(launcher: str, mnist_root, tmp_path, *extra: str):
    folder = tmp_path / "sweep"
    result = run_cli(
        "train",
        "-m",
        f"hydra/launcher={launcher}",
        "model.activation=relu,swishy,tanh,gelu",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.sweep.dir={folder}",
        *extra,
        cwd=tmp_path,
    )
    jobs = {path.name.split("_")[0]: path for path in folder.iterdir() if path.is_dir()}
    return result, jobs


def test_joblib_runs_jobs_side_by_side_on_their_share_of_the_cores(mnist_root, tmp_path):
    result, jobs = sweep("parallel", mnist_root, tmp_path, "hydra.launcher.n_jobs=2")
    assert result.returncode == 1, result.stderr
    assert "1 job(s) of the sweep failed:" in result.stderr and "  job 1 (" in result.stderr
    assert "swishy" in result.stderr
    assert sorted(jobs) == ["0", "1", "2", "3"]
    for number in ("0", "2", "3"):
        assert (jobs[number] / "metrics.json").is_file(), f"job {number} finished"
        log = (jobs[number] / "train.log").read_text()
        threads = max(1, os.cpu_count() // 2)
        assert f"job {number}: {threads} torch thread(s), 2 job(s) side by side" in log
    assert not (jobs["1"] / "metrics.json").exists()


def test_submitit_local_runs_each_job_in_its_own_process(mnist_root, tmp_path):
    result, jobs = sweep("submitit_local", mnist_root, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "1 job(s) of the sweep failed:" in result.stderr and "  job 1 (" in result.stderr
    pids = set()
    for number in ("0", "2", "3"):
        status = json.loads((jobs[number] / "status.json").read_text())
        assert status["status"] == "finished"
        pids.add(status["pid"])
    assert len(pids) == 3, "each job ran in a process of its own"
