"""A sweep run serially against the same sweep with jobs side by side (Hydra's joblib launcher,
convbench's `hydra/launcher=parallel` preset), each job on one torch thread.

Both sweeps train the same jobs (LeNet-5 with four activations, one epoch on the first
`--images` Fashion-MNIST training images, or generated images in its format when Debian's
package is not installed) through the real CLI; the order of the two alternates between
repeats and the medians are compared. On a machine with C cores and jobs of one thread, the
parallel sweep can approach min(C, n_jobs) times the serial one; start-up and data loading in
each job, and memory bandwidth, take their share.

    python benchmarks/sweep_parallel.py               # 4 jobs, 2 at a time, 3 repeats
    python benchmarks/sweep_parallel.py --smoke       # seconds; used by the tests
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fashion_mnist_dir

FASHION_MNIST = fashion_mnist_dir()
ACTIVATIONS = "relu,tanh,gelu,sigmoid"


def data_overrides(tmp: Path, images: int, generated: bool) -> list[str]:
    if not generated and FASHION_MNIST.is_dir():
        return ["dataset=fashionmnist", f"dataset.train_limit={images}"]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.fakedata import write_idx_dataset

    root = write_idx_dataset(tmp / "data", train=images + 1000, test=500)
    return ["dataset=mnist", f"dataset.root={root}"]


def run_sweep(parallel: bool, overrides: list[str], folder: Path, jobs: int) -> float:
    launcher = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}"] if parallel else []
    command = [
        sys.executable,
        "-m",
        "convbench",
        "train",
        "-m",
        f"model.activation={ACTIVATIONS}",
        *overrides,
        *launcher,
        "trainer.num_threads=1",
        "trainer.epochs=1",
        "dataset.val_size=1000",
        "trainer.log_images=false",
        "trainer.device=cpu",
        f"hydra.sweep.dir={folder}",
        "-q",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="training images per job")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time in the parallel sweep")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generated-data", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="2,000 images, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.repeats = 2000, 1
    with tempfile.TemporaryDirectory(prefix="convbench-sweeps-") as name:
        tmp = Path(name)
        overrides = data_overrides(tmp, args.images, args.generated_data)
        times: dict[str, list[float]] = {"serial": [], "parallel": []}
        for repeat in range(args.repeats):
            order = ["serial", "parallel"] if repeat % 2 == 0 else ["parallel", "serial"]
            for kind in order:
                folder = tmp / f"{kind}-{repeat}"
                times[kind].append(run_sweep(kind == "parallel", overrides, folder, args.jobs))
                print(
                    f"  repeat {repeat + 1}/{args.repeats}  {kind:<8} {times[kind][-1]:7.1f} s",
                    flush=True,
                )
    serial, parallel = (statistics.median(times[kind]) for kind in ("serial", "parallel"))
    print(
        f"4 jobs of {args.images:,} images, one thread each, on {os.cpu_count()} "
        f"cores: serial {serial:.1f} s, {args.jobs} at a time {parallel:.1f} s, "
        f"speed-up {serial / parallel:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
