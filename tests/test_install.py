"""`pip install .` (not editable) into a fresh virtual environment finds its configs anywhere."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_mnist_overrides

REPO = Path(__file__).resolve().parents[1]


def _skip_generated(folder: str, names: list[str]) -> set[str]:
    """Leave out git data, caches and (at the top only) run outputs and downloaded datasets."""
    skipped = {n for n in names if n in {".git", "__pycache__", ".venv"} or n.endswith(".egg-info")}
    if Path(folder) == REPO:
        skipped |= {n for n in names if n in {"outputs", "data", "multirun"}}
    return skipped


@pytest.mark.slow
def test_wheel_install_trains_from_any_folder(tmp_path, mnist_root):
    # The venv sees the already installed torch & co. (system site-packages) so the test does not
    # reinstall gigabytes; convbench itself is installed from the checkout as a regular wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    source = tmp_path / "src"  # a copy, so the build cannot touch the checkout
    shutil.copytree(REPO, source, ignore=_skip_generated)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    shutil.rmtree(source)  # nothing may point back into the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import convbench.paths as p; print(p.config_dir())"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    run_dir = elsewhere / "run"
    result = subprocess.run(
        [str(venv / "bin" / "convbench"), "train", *tiny_mnist_overrides(mnist_root),
         "trainer.epochs=1", f"hydra.run.dir={run_dir}"],
        cwd=elsewhere, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1
