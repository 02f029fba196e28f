"""The recipes' accuracy: `convbench train -m experiment=recipe_<family>` for each family asked,
read back with `convbench compare --format json`, printed as the README's table (model, params,
MACs, epochs, test accuracy, wall time, device) with a PASS or FAIL line per accuracy target, and
written to benchmarks/results/accuracy_<device>.md.

Each recipe is a config (conf/experiment/recipe_<family>.yaml): what this benchmark measures is
exactly what `convbench train experiment=recipe_<family>` does. Data: real Fashion-MNIST (Debian's
dataset-fashion-mnist, or torchvision's layout under ./data); --generated-data trains on images
generated in its format instead (for the smoke test: the accuracies then mean nothing).

    python benchmarks/accuracy.py                        # every recipe as configured (hours on a CPU)
    python benchmarks/accuracy.py --families lenet,resnet
    python benchmarks/accuracy.py --families lenet --seeds 0,1,2
    python benchmarks/accuracy.py --smoke                # LeNet, 1 epoch on 500 images; for the tests
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("lenet", "vgg", "googlenet", "resnet")
TARGETS = {"lenet": 0.915, "vgg": 0.935, "googlenet": 0.937, "resnet": 0.945}


def convbench(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "convbench", *arguments], capture_output=True, text=True
    )


def train(family: str, seeds: str, folder: Path, extra: list[str]) -> None:
    result = convbench(
        "train",
        "-m",
        f"experiment=recipe_{family}",
        f"seed={seeds}",
        f"hydra.sweep.dir={folder}",
        "trainer.log_images=false",
        *extra,
    )
    if result.returncode != 0:
        raise SystemExit(f"recipe_{family} failed (exit {result.returncode}):\n{result.stderr}")


def rows(folder: Path) -> list[dict]:
    """One row per recipe, from `convbench compare --format json` and the runs' metrics.json
    (epochs trained, which early stopping may cut, and the device)."""
    result = convbench("compare", str(folder), "--format", "json")
    if result.returncode != 0:
        raise SystemExit(f"convbench compare failed:\n{result.stderr}")
    table = []
    for group in json.loads(result.stdout)["groups"]:
        metrics = [json.loads((Path(run) / "metrics.json").read_text()) for run in group["runs"]]
        measures = group["measures"]
        table.append(
            {
                "family": folder.name,
                "model": metrics[0]["model"].rsplit(".", 1)[-1],
                "n": group["n"],
                "params": int(measures["params"]["mean"]),
                "macs": measures["macs"]["mean"],
                "epochs": sorted({m["epochs"] for m in metrics}),
                "test_acc": measures["test_acc"],
                "wall_time_s": measures["wall_time_s"]["mean"],
                "device": metrics[0]["device"],
                "precision": metrics[0]["settled"]["precision"],
            }
        )
    return table


def markdown(table: list[dict]) -> str:
    lines = [
        "| recipe | model | params | MACs | epochs | test acc | wall s | device |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in table:
        accuracy = row["test_acc"]
        spread = f" ± {accuracy['std']:.4f}" if row["n"] > 1 else ""
        lines.append(
            f"| recipe_{row['family']} | {row['model']} | {row['params']:,} | "
            f"{row['macs'] / 1e6:.1f} M | {'/'.join(map(str, row['epochs']))} | "
            f"{accuracy['mean']:.4f}{spread} (n={row['n']}) | {row['wall_time_s']:.1f} | "
            f"{row['device']} {row['precision']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--generated-data", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="LeNet, 1 epoch on 500 images")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args(argv)
    families = [family.strip() for family in args.families.split(",") if family.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    extra = list(args.overrides)
    if args.smoke:
        families, args.generated_data = ["lenet"], True
        extra += ["trainer.epochs=1", "scheduler.warmup_epochs=0", "trainer.num_threads=1"]
        extra += ["dataset.val_size=100"]
    with tempfile.TemporaryDirectory(prefix="convbench-accuracy-") as name:
        tmp = Path(name)
        if args.generated_data:
            sys.path.insert(0, str(REPO / "tests"))
            from helpers.fakedata import write_idx_dataset

            root = write_idx_dataset(tmp / "data", train=600, test=200)
            extra += ["dataset=mnist", f"dataset.root={root}"]
        table = []
        for family in families:
            train(family, args.seeds, tmp / family, extra)
            table.extend(rows(tmp / family))
    text = markdown(table)
    print(text)
    for row in table:
        target, reached = TARGETS[row["family"]], row["test_acc"]["mean"]
        verdict = "PASS" if reached >= target else "FAIL"
        print(f"{verdict}  recipe_{row['family']}: test accuracy {reached:.4f} (target {target})")
    if not args.smoke:
        device = table[0]["device"] if table else "none"
        out = REPO / "benchmarks" / "results" / f"accuracy_{device}.md"
        out.write_text(text + "\n")
        print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
