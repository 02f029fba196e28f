"""The console script as a user's shell runs it, a fresh process each time: its exit codes and
what goes to stdout and to stderr, `python -m convbench --version`, shell completion, startup
that stays fast (`--help`, a config error and each TAB never import torch; training does not
import matplotlib), a user's own model package on PYTHONPATH as the README says, and two runs
started at once. What the commands answer is tested in this process in tests/unit/."""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from helpers.cli import ONE_THREAD, REPO, cli_env, run_cli, tiny_mnist_overrides
from helpers.inprocess import convbench

COMMANDS = {"train", "summary", "tb", "runs", "eval", "resume"}
EXAMPLE = REPO / "examples" / "own_model"


# --- the installed script: exit codes, stdout and stderr ------------------------------------------


def console_script() -> Path:
    """The `convbench` that `pip install` put beside this interpreter."""
    script = Path(sys.executable).parent / "convbench"
    assert script.is_file(), f"{script} is missing: install convbench (pip install -e '.[test]')"
    return script


def test_the_console_script_keeps_results_on_stdout_and_errors_on_stderr(tmp_path):
    env = cli_env()
    shown = subprocess.run(
        [console_script(), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (shown.returncode, shown.stdout, shown.stderr) == (
        0,
        f"convbench {version('convbench')}\n",
        "",
    )
    typo = subprocess.run(
        [console_script(), "train", "trainer.epoch=3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert typo.returncode == 2 and typo.stdout == "", typo
    lines = typo.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "trainer.epochs" in lines[0]
    assert not (tmp_path / "outputs").exists()


def test_python_m_version_is_the_installed_distributions(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"convbench {version('convbench')}\n"


# --- startup that stays fast --------------------------------------------------------------------


def test_help_lists_commands_without_importing_torch_or_hydra():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from convbench.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'train' in result.output\n"
        "heavy = sorted(m for m in ('torch', 'hydra', 'tensorboard') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


def test_cli_module_does_not_import_torch():
    code = "import sys, convbench.cli; print('torch' in sys.modules, 'hydra' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_config_errors_are_reported_without_importing_torch(tmp_path):
    """A typo must be answered at Hydra speed, not after torch's multi-second import."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "convbench", "train", "trainer.epoch=3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Did you mean trainer.epochs?" in result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "hydra" in imported and "torch" not in imported


def test_training_start_does_not_import_matplotlib():
    """The engine imports convbench.monitor.pictures; matplotlib waits until a picture is drawn."""
    code = "import sys, convbench.engine; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --- shell completion ---------------------------------------------------------------------------


def test_completion_script_names_the_command_under_python_m(tmp_path):
    # Typer detects the shell from the process tree, which a test run outside a shell (cron, an
    # IDE, a reparented background job) lacks; with detection off the option takes the shell.
    no_detection = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = run_cli("--show-completion", "bash", cwd=tmp_path, env_extra=no_detection)
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _convbench_completion convbench" in result.stdout
    assert "_CONVBENCH_COMPLETE=complete_bash" in result.stdout


def complete(words: str, cword: int) -> tuple[list[str], list[str]]:
    """Typer's completion protocol, in a fresh interpreter: (candidates, heavy modules loaded)."""
    code = (
        "import os, sys\n"
        "from convbench.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(*sorted(m for m in ('torch', 'hydra', 'tensorboard') if m in sys.modules),\n"
        "      sep=',', file=sys.stderr)\n"
    )
    env = {
        **os.environ,
        "_CONVBENCH_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), [m for m in result.stderr.strip().split(",") if m]


def test_completion_offers_commands_and_choices_without_heavy_imports():
    commands, heavy = complete("convbench ", 1)
    assert set(commands) >= COMMANDS and heavy == [], "each TAB must stay fast"
    assert complete("convbench eval --checkpoint ", 3)[0] == ["best", "last"]
    assert complete("convbench ru", 1)[0] == ["runs"]


def test_bash_sources_the_script_and_completes(tmp_path):
    assert shutil.which("bash"), "needs bash, the shell whose completion script this is"
    # A `convbench` on PATH that runs this interpreter's convbench, as an installed script does.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "convbench"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m convbench "$@"\n')
    wrapper.chmod(0o755)
    script = (
        "source <(convbench --show-completion bash)\n"
        "COMP_WORDS=(convbench e); COMP_CWORD=1\n"
        '_convbench_completion convbench; echo "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "SHELL": "/bin/bash", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["eval", "export"]


# --- a user's own package, and two users at once --------------------------------------------------


def user_env() -> dict:
    """PYTHONPATH as the README says: relative, from the repository root."""
    paths = ["examples/own_model", os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@pytest.fixture
def importable(monkeypatch):
    """`import mynets` works in this process too (for the in-process eval)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))


def test_trains_through_the_search_path_and_evaluates(mnist_root, tmp_path, importable):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train",
        "--config-dir",
        "examples/own_model/conf",
        "model=tinynet",
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        f"hydra.run.dir={run_dir}",
        cwd=REPO,
        env_extra=user_env(),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "mynets.TinyNet" and metrics["epochs"] == 2
    assert metrics["params"] == 5130  # 16*1*9+16 + 32*16*9+32 + 32*10+10
    # The run folder alone may not name a class outside convbench; the config folder vouches.
    refused = convbench("eval", run_dir, "--device", "cpu")
    assert refused.code == 2 and "model._target_=mynets.TinyNet" in refused.stderr
    report = convbench(
        "eval", run_dir, "--config-dir", EXAMPLE / "conf", "--json", "--device", "cpu"
    )
    assert report.code == 0, report.stderr
    assert json.loads(report.stdout)["test_acc"] == metrics["test_acc"]


def test_two_runs_started_together_never_share_a_folder(mnist_root, tmp_path):
    args = [
        sys.executable,
        "-m",
        "convbench",
        "train",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        "dataset.train_limit=64",
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    procs = [
        subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    run_dirs = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")]
    assert len(run_dirs) == 2 and run_dirs[0] != run_dirs[1]
