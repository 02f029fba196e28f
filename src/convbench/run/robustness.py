"""Testing weights under perturbed test images (convbench.data.perturb): the end of a run with a
`robustness` block, and `convbench eval --shift ...` afterwards, both come here, so they agree
to the last digit.
"""

import logging

from torch import nn

from convbench.data.batches import Split
from convbench.data.kinds import KINDS, amount_key
from convbench.data.perturb import perturb
from convbench.engine import evaluate
from convbench.run.build import AUTOCAST_DTYPES, eval_batches

log = logging.getLogger("convbench")


def perturbed(split: Split, amounts: dict, seed: int) -> Split:
    """`split` (uint8, on the host) perturbed by `amounts` ({kind: amount}), seeded."""
    return Split(perturb(split.images, amounts, seed), split.labels)


def score(model, cfg, split, *, device, settled, amounts=None, seed: int = 0) -> dict:
    """Test `model` (its weights loaded) on `split` (uint8, on the host), perturbed first by
    `amounts` ({kind: amount}, seeded with `seed`), in the run's eval batches, normalization,
    layout and precision: `engine.evaluate`'s dict."""

    if amounts and any(amounts.values()):
        split = perturbed(split, amounts, seed)
    return evaluate(
        model,
        eval_batches(cfg, split, device=device, settled=settled),
        nn.CrossEntropyLoss(),
        num_classes=cfg.dataset.num_classes,
        autocast_dtype=AUTOCAST_DTYPES[settled.precision],
    )


def robustness(model, cfg, split, *, device, settled, amounts: dict, seed: int = 0) -> list:
    """Accuracy and loss under each value of each perturbation in `amounts` (kind -> values),
    one perturbation at a time, each seeded with `seed`: one row per value, {kind, value,
    test_acc, test_loss}. A value of 0 is the clean test."""
    rows = []
    for kind in KINDS:
        for value in dict.fromkeys(amounts.get(kind) or ()):  # in order, without repeats
            found = score(
                model, cfg, split, device=device, settled=settled, amounts={kind: value}, seed=seed
            )
            rows.append(
                {"kind": kind, "value": value, "test_acc": found["acc"], "test_loss": found["loss"]}
            )
    return rows


def by_kind(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Robustness rows as metrics.json keeps them: {"shift": {"0": 0.91, "2": 0.70}, ...}."""
    found: dict[str, dict[str, float]] = {}
    for row in rows:
        found.setdefault(row["kind"], {})[amount_key(row["value"])] = row["test_acc"]
    return found


def measure(run) -> list[dict]:
    """The run's `robustness` block: the weights in `run.model` tested under each value of each
    listed perturbation, one at a time, exactly as `convbench eval RUN_DIR --shift N` tests
    them; one log line per kind. Nothing listed: nothing done, []."""
    block = run.cfg.robustness
    amounts = {kind: list(block[kind]) for kind in KINDS}
    if not any(amounts.values()):
        return []
    test = run.batches["test"]
    split = Split(test.images.cpu(), test.labels.cpu())  # perturbed on the host, seeded there
    rows = []
    for kind, values in amounts.items():
        if not values:
            continue
        found = robustness(
            run.model,
            run.cfg,
            split,
            device=run.device,
            settled=run.settled,
            amounts={kind: values},
            seed=block.seed,
        )
        accuracies = " | ".join(f"{amount_key(r['value'])} -> {r['test_acc']:.4f}" for r in found)
        log.info("test acc under %s (%s): %s", kind, KINDS[kind].unit, accuracies)
        rows += found
    return rows


def log_rows(writer, rows: list[dict]) -> None:
    """One TensorBoard curve per kind, `robust/<kind>_acc`, with the amount as the step so that
    TensorBoard draws accuracy against it: pixels for shift, occlude and clutter, and
    round(100 * strength) for illumination (TensorBoard's steps are whole numbers)."""
    for row in rows:
        value = row["value"]
        step = int(value) if KINDS[row["kind"]].whole else round(100 * value)
        writer.add_scalar(f"robust/{row['kind']}_acc", row["test_acc"], step)
