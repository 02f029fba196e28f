"""`python -m convbench --version` and shell completion, as a user's shell would use them."""

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from helpers.cli import run_cli

COMMANDS = {"train", "summary", "tb", "runs", "eval", "resume"}


def test_python_m_version_is_the_installed_distributions(cli, tmp_path):
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"convbench {version('convbench')}\n"


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


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_sources_the_script_and_completes(tmp_path):
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
    assert result.stdout.split() == ["eval"]
