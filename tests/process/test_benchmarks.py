"""The benchmark scripts run end to end in their --smoke mode and print what they promise.

Only the format and the sign of the numbers are checked: tests never assert on timings.
"""

import json
import re
import statistics
import subprocess
import sys

import pytest
import torch

from convbench.config.auto import native_bf16
from helpers.cli import REPO

BENCHMARKS = REPO / "benchmarks"
NUMBER = r"[\d,]+(?:\.\d+)?"


def run_script(name: str, *args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def verdict_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"(PASS|FAIL|SKIP)  ", line)]


def throughput_rows(output: str, models: list[str]) -> dict[str, list[float]]:
    """model -> [bare fp32, bare bf16, convbench, dataloader img/s, the epochs' ratio,
    convbench/best bare, its quartiles (two), same optimizer, convbench/dataloader] (after the
    column saying what convbench ran the model in)."""
    rows = {}
    for model in models:
        numbers = r"\s+".join(
            [f"({NUMBER})"] * 6 + [f"({NUMBER})-({NUMBER})"] + [f"({NUMBER})"] * 2
        )
        pattern = rf"^{model}\s+\S+\s+{numbers}$"
        match = re.search(pattern, output, re.MULTILINE)
        assert match, f"no table row for {model} in:\n{output}"
        rows[model] = [float(value.replace(",", "")) for value in match.groups()]
    return rows


@pytest.mark.parametrize(
    ("args", "models", "data_word"),
    [
        (["--generated-data"], ["mlp", "lenet"], "generated"),
        (["--dataset", "cifar10", "--models", "lenet", "--workers", "0,2"], ["lenet"], "CIFAR-10"),
    ],
    ids=["fashionmnist-generated", "cifar10-two-loaders"],
)
def test_throughput_smoke(tmp_path, args, models, data_word):
    results_file = tmp_path / "throughput.json"
    output = run_script("throughput.py", *args, "--json", str(results_file))
    assert "torch threads" in output and data_word in output
    assert "convbench/best bare" in output and "convbench/dataloader" in output
    for values in throughput_rows(output, models).values():
        assert all(value > 0 for value in values)
    verdicts = verdict_lines(output)
    assert len(verdicts) == 3 and "convbench/best bare loop >= 1.0 for every model" in verdicts[0]
    saved = json.loads(results_file.read_text())
    assert [r["model"] for r in saved["results"]] == models
    assert all(r["convbench_over_bare"] > 0 for r in saved["results"])
    for r in saved["results"]:  # the target's ratio: each round against its faster bare loop
        by_loop = r["paired_ratios_by_loop"]
        assert sorted(by_loop) == ["bare[bf16]", "bare[fp32]"] and len(r["paired_ratios"]) == 2
        fastest = [min(pair) for pair in zip(*by_loop.values(), strict=True)]
        assert r["paired_ratios"] == fastest
        assert r["convbench_over_bare"] == pytest.approx(statistics.median(fastest))
    # By default convbench runs each model in what a run would pick here (convbench.config.auto).
    precision = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    expected = {"mlp": precision, "lenet": f"{precision}+cl"}
    assert {r["model"]: r["runs_in"] for r in saved["results"]} == {m: expected[m] for m in models}


def test_startup_smoke(tmp_path):
    results_file = tmp_path / "startup.json"
    output = run_script("startup.py", "--json", str(results_file))
    for label in ("convbench --help", "import torch", "first step", "first step - import torch"):
        match = re.search(rf"^{re.escape(label)}\s+({NUMBER})", output, re.MULTILINE)
        assert match, f"no line for {label!r} in:\n{output}"
        assert float(match.group(1)) > 0 or label == "first step - import torch"
    assert "first training step" in output and "python -X importtime" in output
    verdicts = verdict_lines(output)
    assert len(verdicts) == 2 and all(re.match(r"(PASS|FAIL)  ", line) for line in verdicts)
    saved = json.loads(results_file.read_text())
    assert all(value > 0 for value in saved["times_s"]["first step"])


def test_sweep_parallel_reports_both_sweeps_and_the_speed_up():
    output = run_script("sweep_parallel.py", timeout=900)
    found = re.search(
        rf"serial ({NUMBER}) s, 2 at a time ({NUMBER}) s, speed-up ({NUMBER})x", output
    )
    assert found, output
    serial, parallel, speed_up = (float(g.replace(",", "")) for g in found.groups())
    assert serial > 0 and parallel > 0 and speed_up == pytest.approx(serial / parallel, rel=0.02)


def test_precision_prints_every_variant_for_each_model():
    output = run_script("precision.py")
    for model in ("mlp", "lenet"):
        row = re.search(rf"^{model}\s+({NUMBER})M((?:\s+{NUMBER}){{7}})$", output, re.MULTILINE)
        assert row, output
        numbers = [float(n.replace(",", "")) for n in row[2].split()]
        assert all(n > 0 for n in numbers)
        # The ratio is printed with two decimals: it may differ from the quotient by 0.005.
        assert numbers[4] == pytest.approx(numbers[1] / numbers[0], abs=0.0051), "bf16/fp32"


def test_imagefolder_times_the_first_and_the_cached_load():
    output = run_script("imagefolder.py")
    found = re.search(
        rf"first load \(decode \+ cache\) ({NUMBER}) s, second load \(cache\) "
        rf"({NUMBER}) s: ({NUMBER})x faster, ({NUMBER}) images",
        output,
    )
    assert found, output
    first, second, ratio, images = (float(g.replace(",", "")) for g in found.groups())
    assert first > 0 and second > 0 and images == 600
    assert ratio == pytest.approx(first / second, rel=0.05)
    assert verdict_lines(output), "a PASS or FAIL line for the 10x target"


def test_accuracy_runs_a_recipe_and_prints_its_row_and_verdict():
    output = run_script("accuracy.py")
    precision = "bf16" if native_bf16(torch.device("cpu")) else "fp32"  # what `auto` takes here
    row = re.search(
        rf"^\| recipe_lenet \| LeNet \| 61,706 \| 0\.4 M \| 1 \| ({NUMBER}) \(n=1\) \| ({NUMBER}) "
        rf"\| cpu {precision} \|$",
        output,
        re.MULTILINE,
    )
    assert row, output
    accuracy = float(row[1])
    assert 0 <= accuracy <= 1 and float(row[2]) > 0
    verdicts = verdict_lines(output)
    assert len(verdicts) == 1 and f"test accuracy {accuracy:.4f} (target 0.915)" in verdicts[0]


def test_tune_pruning_measures_both_studies_and_the_default(tmp_path):
    results_file = tmp_path / "tune.json"
    output = run_script("tune_pruning.py", "--trials", "2", "--json", str(results_file))
    saved = json.loads(results_file.read_text())
    for study in ("pruned", "unpruned"):
        assert saved[study]["trials"] == 2 and saved[study]["seconds"] > 0
        assert 0 <= saved[study]["best"] <= 1
    assert saved["ratio"] == pytest.approx(
        saved["pruned"]["seconds"] / saved["unpruned"]["seconds"]
    )
    assert re.search(rf"^time median / none ({NUMBER})x", output, re.MULTILINE), output
    assert re.search(rf"^default\s+({NUMBER})$", output, re.MULTILINE), output
