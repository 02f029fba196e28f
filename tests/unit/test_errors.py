"""One error policy (convbench.errors): a user's mistake exits 2 with one paragraph; a bug, in
convbench or in the user's own code, keeps its traceback, exits 1 and says it is a bug. Each
case runs `convbench` in this process (helpers.inprocess), with the models at fault of
helpers.faultymodels."""

import pytest

from convbench.errors import BUG_REPORT
from convbench.launch.sweeps import is_job_failure
from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.inprocess import convbench

FAULTY = "model._target_=helpers.faultymodels"


def one_paragraph(stderr: str) -> bool:
    return "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([f"{FAULTY}.PickyWidth", "+model.width=0"], "ValueError: width must be at least 1"),
        (["+model.colour=red"], "TypeError"),  # LeNet takes no such argument
        (["model._target_=helpers.nosuchmodule.Net"], "cannot be used"),
        (["optimizer.lr=-1"], "ValueError: Invalid learning rate"),  # torch's own check
    ],
    ids=["model-valueerror", "model-typeerror", "no-such-target", "optimizer-valueerror"],
)
def test_rejected_arguments_are_the_users_to_fix(mnist_root, tmp_path, overrides, expected):
    result = convbench("train", *tiny_mnist_overrides(mnist_root), *overrides, cwd=tmp_path)
    assert result.code == 2, result.stderr
    assert expected in result.stderr and one_paragraph(result.stderr), result.stderr


def test_a_bug_in_a_users_model_keeps_its_traceback_and_exits_1(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        f"{FAULTY}.BrokenInit",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.code == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr
    assert "faultymodels.py" in result.stderr, "the traceback reaches the user's own line"
    assert result.stderr.rstrip().endswith(BUG_REPORT)
    assert not run_dir.exists(), "met by the checks before the run: no run folder"


def test_a_sweep_reports_user_errors_and_bugs_from_the_jobs_folders(mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    targets = "convbench.models.lenet.LeNet,helpers.faultymodels.BrokenInit,helpers.nosuch.Net"
    result = convbench(
        "train",
        "-m",
        f"model._target_={targets}",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        ONE_THREAD,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.code == 1, result.stderr
    summary = result.stderr[result.stderr.index("2 job(s) of the sweep failed:") :]
    lines = summary.strip().splitlines()[1:]
    assert lines[0].startswith("  job 1 (") and "division by zero" in lines[0]
    assert lines[1].startswith("  job 2 (") and "cannot be used" in lines[1]
    jobs = {path.name.split("_")[0]: path for path in sweep.iterdir() if path.is_dir()}
    assert (jobs["0"] / "metrics.json").is_file(), "the other jobs ran to the end"
    log = (jobs["1"] / "train.log").read_text()
    assert "job 1 failed with a bug" in log and "ZeroDivisionError" in log, log
    assert "Traceback" not in (jobs["2"] / "train.log").read_text(), "a user error: no traceback"


def test_only_a_jobs_own_failure_ends_a_sweep_quietly():
    failed = [{"num": 1, "run_dir": "sweep/1_x", "error": "model.activation='swishy' is not known"}]
    assert is_job_failure(ValueError("model.activation='swishy' is not\n known"), failed)
    assert not is_job_failure(RuntimeError("the launcher lost its workers"), failed)
    assert not is_job_failure(RuntimeError("the launcher lost its workers"), [])


def test_a_bug_met_by_the_checks_before_a_run_keeps_its_traceback(mnist_root, tmp_path):
    """The preflight runs the user's forward on one meta image: a bug there is a bug (exit 1,
    traceback), not a config error, and no run folder is made."""
    result = convbench(
        "train", *tiny_mnist_overrides(mnist_root), f"{FAULTY}.BrokenForward", cwd=tmp_path
    )
    assert result.code == 1
    assert "AttributeError" in result.stderr and "temperature" in result.stderr
    assert result.stderr.rstrip().endswith(BUG_REPORT)
    assert not (tmp_path / "outputs").exists()
