"""What pruning buys a search, and whether the search finds a better config than the default.

Measured side by side in one run, each study a fresh `convbench tune` process:

  pruned      conf/tune/lenet_sgd.yaml (LeNet, SGD, Fashion-MNIST, 10,000 training images,
              6 epochs, lr log-uniform 1e-3..0.5, momentum, weight decay, activation) with the
              median pruner.
  unpruned    the same study with tune.pruner=none.
  default     `convbench train` with the same model, data and budget and the default
              optimizer settings: the config a user would run without a search.

Both studies use the random sampler with the same seed, so they ask for the same trials in
the same order (TPE would steer each study by its own history, pruned or not); each trial
trains on one thread, two trials at a time. Printed: the trials each study pruned, its wall
time and the ratio pruned / unpruned (below 1.0: pruning saved time), and the best
validation accuracy of each study against the default's. Targets: at least a third of the
trials pruned, the ratio below 1.0, the best trial above the default.

  python benchmarks/tune_pruning.py                 # 12 trials a study
  python benchmarks/tune_pruning.py --trials 20
  python benchmarks/tune_pruning.py --smoke         # a tiny generated dataset; used by the tests
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import fashion_mnist_dir
from convbench.data.formats import write_idx

PRUNED_TARGET = 1 / 3


def tiny_dataset(root: Path) -> Path:
    """A generated MNIST-format dataset whose classes differ by brightness: learnable in an
    epoch, so that trials differ."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 600), ("t10k", 200)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = (rng.random((count, 28, 28)) * 60 + labels[:, None, None] * 19).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def study(folder: Path, data: list[str], *, pruner: str, trials: int, workers: int) -> dict:
    """One `convbench tune` process: its wall time, and its trials from the study's folders."""
    command = [
        sys.executable,
        "-m",
        "convbench",
        "tune",
        "tune=lenet_sgd",
        *data,
        "tune.sampler=random",
        f"tune.pruner={pruner}",
        f"tune.n_trials={trials}",
        f"tune.workers={workers}",
        f"tune.dir={folder}",
        "trainer.num_threads=1",
        "trainer.log_images=false",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    said = (done.stdout + done.stderr).splitlines()
    end = max(i for i, line in enumerate(said) if line.startswith("Study "))
    answer = said[end:]  # the study's end: its counts, pruning's saving, the best trial
    states, best = [], None
    for run in sorted(folder.glob("trial-*")):
        states.append(json.loads((run / "status.json").read_text())["status"])
        metrics = run / "metrics.json"
        if metrics.is_file():
            value = json.loads(metrics.read_text())["best_val_acc"]
            best = value if best is None else max(best, value)
    return {
        "seconds": seconds,
        "pruned": states.count("pruned"),
        "trials": len(states),
        "best": best,
        "answer": answer,
    }


def default_run(folder: Path, data: list[str], budget: list[str]) -> float:
    """The default optimizer settings on the study's model, data and budget: best val acc."""
    command = [
        sys.executable,
        "-m",
        "convbench",
        "train",
        "model=lenet",
        "optimizer=sgd",
        *data,
        *budget,
        "trainer.num_threads=1",
        "trainer.log_images=false",
        f"hydra.run.dir={folder}",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((folder / "metrics.json").read_text())["best_val_acc"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a tiny generated dataset")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.smoke:
            root = tiny_dataset(scratch / "data")
            data = ["dataset=mnist", f"dataset.root={root}", "dataset.val_size=100"]
            budget = ["dataset.train_limit=500", "trainer.epochs=2"]
            searched = [*data, *budget, "tune.startup_trials=1", "tune.warmup_epochs=0"]
            trials = min(args.trials, 4)
        else:
            data = ["dataset=fashionmnist", f"dataset.root={fashion_mnist_dir()}"]
            budget = ["dataset.train_limit=10000", "trainer.epochs=6"]  # lenet_sgd's own
            searched, trials = data, args.trials
        each = {"trials": trials, "workers": args.workers}
        pruned = study(scratch / "pruned", searched, pruner="median", **each)
        unpruned = study(scratch / "none", searched, pruner="none", **each)
        default = default_run(scratch / "default", data, budget)
    ratio = pruned["seconds"] / unpruned["seconds"]
    share = pruned["pruned"] / max(pruned["trials"], 1)
    print(f"{'study':<10} {'trials':>6} {'pruned':>6} {'wall s':>8} {'best val acc':>13}")
    for name, row in (("median", pruned), ("none", unpruned)):
        best = "-" if row["best"] is None else f"{row['best']:.4f}"
        print(f"{name:<10} {row['trials']:>6} {row['pruned']:>6} {row['seconds']:>8.1f} {best:>13}")
    print(f"{'default':<10} {'':>6} {'':>6} {'':>8} {default:>13.4f}")
    print(f"pruned share {share:.2f} (target >= {PRUNED_TARGET:.2f})")
    print(f"time median / none {ratio:.2f}x (target < 1.0)")
    best = max(v for v in (pruned["best"], unpruned["best"]) if v is not None)
    print(f"best trial {best:.4f} vs default {default:.4f}: {best - default:+.4f}")
    print("\nThe median study's own end:")
    print("\n".join(pruned["answer"]))
    if args.json:
        figures = {"pruned": pruned, "unpruned": unpruned, "default": default, "ratio": ratio}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
