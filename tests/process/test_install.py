"""`pip install .` (not editable) into a fresh virtual environment finds its configs anywhere."""

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

from helpers.cli import tiny_mnist_overrides

REPO = Path(__file__).resolve().parents[2]


def _skip_generated(folder: str, names: list[str]) -> set[str]:
    """Leave out git data, caches and (at the top only) run outputs and downloaded datasets."""
    skipped = {n for n in names if n in {".git", "__pycache__", ".venv"} or n.endswith(".egg-info")}
    if Path(folder) == REPO:
        skipped |= {n for n in names if n in {"outputs", "data", "multirun"}}
    return skipped


def venv_seeing_this_environment(venv: Path) -> Path:
    """A new virtual environment that also sees the packages of the interpreter running the
    tests (torch & co., hatchling), so nothing is reinstalled. `--system-site-packages` would
    see the base interpreter's instead, which inside a virtual environment (where a newcomer
    runs the tests) has none of them. Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = [*site.getsitepackages(), site.getusersitepackages()]
    (Path(purelib) / "tests-outer-environment.pth").write_text("\n".join(ours) + "\n")
    return python


def test_wheel_install_trains_from_any_folder(tmp_path, mnist_root):
    # convbench itself is installed from the checkout as a regular wheel.
    venv = tmp_path / "venv"
    python = venv_seeing_this_environment(venv)
    source = tmp_path / "src"  # a copy, so the build cannot touch the checkout
    shutil.copytree(REPO, source, ignore=_skip_generated)
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    shutil.rmtree(source)  # nothing may point back into the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import convbench.config.compose as p; print(p.config_dir())"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    run_dir = elsewhere / "run"
    result = subprocess.run(
        [
            str(venv / "bin" / "convbench"),
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1
