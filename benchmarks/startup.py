"""Start-up time: how long a user waits before convbench does anything useful.

Measured side by side in one run, each in fresh processes, repeated (median shown):

  help          `convbench --help` wall time (the console script next to this Python; the
                same through a pyenv-style shim on PATH is shown too when there is one).
                Target: < 0.3 s.
  import torch  `python -c "import torch"` wall time: the floor any PyTorch program pays.
  first step    from launching `convbench train ...` on a tiny generated MNIST-format dataset
                (dataset.root, trainer.epochs=1, CPU) to the first forward pass of training.
                Measured from outside: the model is `model._target_=startup.FirstStepProbe`
                (this file, on PYTHONPATH), whose first training-mode forward writes
                time.time() to the file named by $CONVBENCH_FIRST_STEP_FILE.
  first step - import torch   what convbench itself adds. Target: < 1.5 s.

Then, for acting on it: the wall time of importing each heavy dependency alone (fresh process,
median), and the largest cumulative imports of a real `convbench train` launch
(`python -X importtime`).

  python benchmarks/startup.py              # 5 repeats
  python benchmarks/startup.py --smoke      # 1 repeat; used by the tests
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convbench.data.formats import write_idx

HELP_TARGET_S = 0.3
OVERHEAD_TARGET_S = 1.5  # first step minus import torch
PROBE_ENV = "CONVBENCH_FIRST_STEP_FILE"
# Modules whose first import marks a stage of `convbench train`: the CLI; Hydra, from `hydra` until
# convbench.config.compose starts; the job Hydra runs (convbench.run.lifecycle) and the run's objects
# (convbench.run.build, which brings torch); the data, the loop and what it logs.
WATCHED = {
    "convbench.cli",
    "hydra",
    "convbench.config.compose",
    "convbench.run.lifecycle",
    "convbench.run.build",
    "torch",
    "torch.utils.tensorboard",
    "torch._dynamo",
    "convbench.monitor.pictures",
    "PIL",
    "torchvision",
    "matplotlib",
    "rich",
    "convbench.data",
    "convbench.engine",
}
TIMELINE_LAUNCHER = """
import json, sys, time
marks = []
class Marker:
    def find_spec(self, name, path, target=None):
        if name in {watch!r}:
            marks.append((name, time.time()))
sys.meta_path.insert(0, Marker())
import atexit
atexit.register(lambda: open({out!r}, "w").write(json.dumps(marks)))
sys.argv = ["convbench", *{args!r}]
from convbench.cli import main
main()
"""
IMPORTS = {  # label -> statement, each timed alone in a fresh interpreter
    "python (nothing)": "pass",
    "import convbench.cli (typer)": "import convbench.cli",
    "import torch": "import torch",
    "import hydra + omegaconf": "import hydra, omegaconf; from hydra.utils import instantiate",
    "import torchvision": "import torchvision",
    "torch + tensorboard SummaryWriter": "from torch.utils.tensorboard import SummaryWriter",
    "import convbench.run.lifecycle (+ convbench.run.build)": "import convbench.run.lifecycle",
    "torch + first optimizer (imports torch._dynamo)": "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)",
}


class FirstStepProbe(nn.Module):
    """A tiny classifier that records when training first calls it; takes any model keys."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **_):
        super().__init__()
        self.linear = nn.Linear(in_channels * image_size * image_size, num_classes)
        self.recorded = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training and not self.recorded:
            self.recorded = True
            Path(os.environ[PROBE_ENV]).write_text(repr(time.time()))
        return self.linear(images.flatten(1))


# ----------------------------------------------------------------------------- fixtures


def write_tiny_mnist(folder: Path, train: int = 600, test: int = 200) -> Path:
    """MNIST's four gzipped IDX files with random images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def convbench_commands() -> dict[str, list[str]]:
    """The console script installed next to this Python, and the one PATH finds if different."""
    installed = Path(sys.executable).parent / "convbench"
    commands = {"convbench --help": [str(installed) if installed.is_file() else "convbench"]}
    on_path = shutil.which("convbench")
    if on_path and Path(on_path) != installed:
        commands[f"convbench --help via PATH ({on_path})"] = [on_path]
    return {label: [*command, "--help"] for label, command in commands.items()}


def train_command(data_root: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "convbench",
        "train",
        "model=mlp",
        "model._target_=startup.FirstStepProbe",
        "dataset=mnist",
        f"dataset.root={data_root}",
        "dataset.val_size=100",
        "trainer.epochs=1",
        "trainer.device=cpu",
        f"hydra.run.dir={run_dir}",
    ]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    benchmarks = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (benchmarks, env.get("PYTHONPATH")) if p)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


# ----------------------------------------------------------------------------- measurements


def wall_time(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def first_step_time(data_root: Path, tmp: Path, attempt: int) -> float:
    """Seconds from launching `convbench train` to its first training forward pass."""
    stamp = tmp / f"first-step-{attempt}.txt"
    env = child_env({PROBE_ENV: str(stamp)})
    command = train_command(data_root, tmp / f"run-{attempt}")
    launched = time.time()
    result = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True)
    if result.returncode != 0 or not stamp.is_file():
        raise SystemExit(f"convbench train failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return float(stamp.read_text()) - launched


def measure_side_by_side(repeats: int, tmp: Path) -> dict[str, list[float]]:
    """Every measurement once per round, in a rotating order, `repeats` rounds."""
    data_root = write_tiny_mnist(tmp / "mnist")
    env = child_env()
    runners = {
        label: (lambda c=command: wall_time(c, env, tmp))
        for label, command in convbench_commands().items()
    }
    runners["import torch"] = lambda: wall_time([sys.executable, "-c", "import torch"], env, tmp)
    runners["first step"] = lambda: first_step_time(data_root, tmp, len(times["first step"]))
    times: dict[str, list[float]] = {label: [] for label in runners}
    labels = list(runners)
    for repeat in range(repeats):
        shift = repeat % len(labels)
        for label in labels[shift:] + labels[:shift]:
            times[label].append(runners[label]())
    return times


def import_times(repeats: int, tmp: Path) -> dict[str, float]:
    """Median wall time of a fresh interpreter running each import statement."""
    env = child_env()
    times: dict[str, list[float]] = {label: [] for label in IMPORTS}
    for _ in range(repeats):
        for label, statement in IMPORTS.items():
            times[label].append(wall_time([sys.executable, "-c", statement], env, tmp))
    return {label: statistics.median(values) for label, values in times.items()}


def top_imports(tmp: Path, count: int) -> list[tuple[str, float]]:
    """(module, cumulative s) of the largest top-level imports of a `convbench train` launch;
    a module imported lazily inside a function counts as top level."""
    data_root = write_tiny_mnist(tmp / "mnist-importtime")
    env = child_env({PROBE_ENV: str(tmp / "importtime-step.txt")})
    command = train_command(data_root, tmp / "run-importtime")
    command.insert(1, "-Ximporttime")
    stderr = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True).stderr
    found = []
    for line in stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if (
            line.startswith("import time:")
            and len(fields) == 3
            and fields[1].strip().isdigit()
            and not fields[2].startswith("  ")  # one space: top level; nested ones indent more
        ):
            found.append((fields[2].strip(), int(fields[1]) / 1e6))
    return sorted(found, key=lambda item: -item[1])[:count]


def timeline(tmp: Path) -> list[tuple[str, float]]:
    """(event, seconds after launch) for one `convbench train`: when chosen modules start to be
    imported (a marker on sys.meta_path, installed before convbench runs), the first step, exit."""
    data_root = write_tiny_mnist(tmp / "mnist-timeline")
    stamp, marks = tmp / "timeline-step.txt", tmp / "timeline-marks.json"
    env = child_env({PROBE_ENV: str(stamp)})
    args = train_command(data_root, tmp / "run-timeline")[3:]  # after `python -m convbench`
    code = TIMELINE_LAUNCHER.format(watch=sorted(WATCHED), out=str(marks), args=args)
    launched = time.time()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, check=True, capture_output=True)
    exited = time.time()
    events = [(f"import {name} starts", t - launched) for name, t in json.loads(marks.read_text())]
    events += [
        ("first training step", float(stamp.read_text()) - launched),
        ("process exited", exited - launched),
    ]
    return sorted(events, key=lambda event: event[1])


# ----------------------------------------------------------------------------- report


def report(times: dict[str, list[float]]) -> tuple[list[str], list[tuple[bool, str]]]:
    medians = {label: statistics.median(values) for label, values in times.items()}
    rows = [f"{'measurement':<58}{'median s':>10}  all runs (s)", "-" * 90]
    for label, values in times.items():
        runs = " ".join(f"{v:.2f}" for v in values)
        rows.append(f"{label:<58}{medians[label]:>10.3f}  {runs}")
    overhead = medians["first step"] - medians["import torch"]
    rows.append(f"{'first step - import torch':<58}{overhead:>10.3f}")
    help_s = medians["convbench --help"]
    checks = [
        (help_s < HELP_TARGET_S, f"convbench --help < {HELP_TARGET_S} s ({help_s:.3f} s)"),
        (
            overhead < OVERHEAD_TARGET_S,
            f"first step - import torch < {OVERHEAD_TARGET_S} s ({overhead:.3f} s)",
        ),
    ]
    return rows, checks


def breakdown(imports: dict[str, float], top: list[tuple[str, float]], events) -> list[str]:
    """Where the start-up time goes, in three views."""
    lines = [
        "",
        "one `convbench train` launch: seconds after launch (and since the previous event)",
    ]
    previous = 0.0
    for event, seconds in events:
        lines.append(f"  {event:<50}{seconds:>8.3f}  (+{seconds - previous:.3f})")
        previous = seconds
    base = imports["python (nothing)"]
    lines += ["", "fresh interpreter per line: median wall s (and minus an empty python)"]
    for label, seconds in imports.items():
        lines.append(f"  {label:<50}{seconds:>8.3f}  ({seconds - base:+.3f})")
    lines += [
        "",
        "largest top-level imports of `convbench train` (python -X importtime, "
        "cumulative s, nested imports included)",
    ]
    lines += [f"  {module:<50}{seconds:>8.3f}" for module, seconds in top]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="one repeat of everything")
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    with tempfile.TemporaryDirectory(prefix="convbench-startup-") as tmp_name:
        tmp = Path(tmp_name)
        times = measure_side_by_side(repeats, tmp)
        imports = import_times(max(1, min(repeats, 3)), tmp)
        top = top_imports(tmp, 12)
        events = timeline(tmp)
    rows, checks = report(times)
    print(
        f"convbench start-up ({repeats} repeat(s), side by side, rotating order; "
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores)"
    )
    print("\n".join(rows + breakdown(imports, top, events)))
    print()
    for passed, text in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    if args.json:
        payload = {
            "times_s": times,
            "imports_s": imports,
            "top_imports_s": dict(top),
            "timeline_s": events,
            "targets": [{"passed": p, "text": t} for p, t in checks],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
