"""The README's model table: parameters and MACs of every shipped model, from `convbench summary`.

Runs `summarize_config` (the code behind `convbench summary --json`) for each model on the
Fashion-MNIST (1x28x28) and CIFAR-10 (3x32x32) shapes and prints a Markdown table. Models are
built on the meta device, so this takes seconds and no memory.

    python benchmarks/model_table.py
"""

from convbench.commands.summary import summarize_config

MODELS = [
    ("mlp", []),
    ("lenet", []),
    ("alexnet", []),
    ("vgg", ["model.depth=11"]),
    ("vgg", ["model.depth=16"]),
    ("vgg", ["model.depth=16", "model.batch_norm=true"]),
    ("googlenet", []),
    ("resnet", ["model.depth=20"]),
    ("resnet", ["model.depth=56"]),
    ("resnet", ["model.depth=110"]),
    ("resnet", ["model.depth=18"]),
    ("resnet", ["model.depth=50"]),
    ("plainnet", ["model.depth=20"]),
    ("plainnet", ["model.depth=56"]),
]
DATASETS = ["fashionmnist", "cifar10"]


def _millions(number: int) -> str:
    return f"{number / 1e6:,.3f} M" if number < 1e9 else f"{number / 1e9:,.2f} G"


def main() -> None:
    header = (
        "| model | overrides | " + " | ".join(f"{d} params | {d} MACs" for d in DATASETS) + " |"
    )
    print(header)
    print("|" + "---|" * (2 + 2 * len(DATASETS)))
    for model, overrides in MODELS:
        cells = []
        for dataset in DATASETS:
            summary = summarize_config([f"model={model}", f"dataset={dataset}", *overrides])
            cells += [f"{summary['params']:,}", _millions(summary["macs"])]
        print(f"| `{model}` | `{' '.join(overrides) or '-'}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
