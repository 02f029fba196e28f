"""Fast defaults and recipe options: trainer.precision/channels_last=auto (the choice and its
reason in the first line and metrics.json, explicit values winning), the estimate after the
first epoch, label smoothing, warm-up, an average of the weights (validated, kept as best.pt,
restored exactly on resume) and early stopping. Runs are `convbench` in this process
(helpers.inprocess); the average's exact resume after a SIGKILL is in
tests/process/test_resume.py."""

import json
import math

import pytest
import torch

from convbench.config.auto import MIN_MACS, choose_channels_last, choose_precision, native_bf16
from convbench.config.compose import compose
from convbench.models.lenet import LeNet
from convbench.models.mlp import MLP
from convbench.run.build import build_optimization, build_scheduler
from convbench.run.checkpoint import load_checkpoint
from helpers.cli import ONE_THREAD, TRUSTED, tiny_mnist_overrides
from helpers.fakedata import write_idx_dataset
from helpers.inprocess import convbench

CPU = torch.device("cpu")


CUDA = torch.device("cuda")


def test_auto_precision_takes_bf16_where_native_and_on_a_gpu_where_worth_it(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert choose_precision("auto", CPU, MIN_MACS).value == "bf16"
    assert choose_precision("auto", CPU, 1).value == "bf16", "a CPU gains at any size"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert choose_precision("auto", CUDA, MIN_MACS).value == "bf16"
    small = choose_precision("auto", CUDA, MIN_MACS - 1)
    assert small.value == "fp32" and "too few" in small.reason, "launch-bound on a GPU"
    assert choose_precision("fp16", CPU, 10**9).value == "fp16", "an explicit value wins"
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, check, lambda: False, raising=False)
    emulated = choose_precision("auto", CPU, 10**9)
    assert emulated.value == "fp32" and "no native bf16" in emulated.reason


def test_auto_channels_last_for_conv_nets_on_a_cpu_and_big_ones_on_a_gpu():
    lenet, mlp = LeNet(10, 1, 28), MLP(10, 1, 28)
    mps = torch.device("mps")
    assert choose_channels_last("auto", lenet, device=CPU, macs=1).value is True
    assert choose_channels_last("auto", lenet, device=CUDA, macs=MIN_MACS).value is True
    assert choose_channels_last("auto", lenet, device=CUDA, macs=MIN_MACS - 1).value is False
    assert choose_channels_last("auto", lenet, device=mps, macs=10**9).value is False
    assert choose_channels_last("auto", mlp, device=CPU, macs=10**9).reason == (
        "auto: no conv layers"
    )
    assert choose_channels_last("True", mlp, device=CPU, macs=0).value is True, (
        "an explicit value wins"
    )
    assert choose_channels_last("false", lenet, device=CPU, macs=10**9).value is False


@pytest.fixture(scope="module")
def default_run(mnist_root, tmp_path_factory):
    """The defaults (precision and channels_last auto) on LeNet, 2,000 images, 2 epochs."""
    folder = tmp_path_factory.mktemp("defaults")
    root = write_idx_dataset(folder / "data", train=2100, test=200)
    result = convbench(
        "train",
        *tiny_mnist_overrides(root),
        ONE_THREAD,
        "trainer.batch_size=32",
        f"hydra.run.dir={folder / 'run'}",
        cwd=folder,
    )
    assert result.code == 0, result.stderr
    return folder / "run", result.stdout


def test_the_choice_and_its_reason_are_in_the_header_and_metrics(default_run):
    run_dir, output = default_run
    # What this machine's CPU gets: bf16 where it computes it natively, else fp32; the layout
    # is channels_last on a CPU either way.
    precision = "bf16" if native_bf16(CPU) else "fp32"
    reason = "native bf16 on cpu" if precision == "bf16" else "cpu has no native bf16"
    header = output.splitlines()[:5]  # what ran, its size, its device, its layout, its folder
    assert "0.4 M MACs per image" in header[1]
    assert f"device cpu, precision {precision} (auto: {reason})" == header[2]
    assert header[3] == "channels_last true (auto: conv net on cpu)"
    settled = json.loads((run_dir / "metrics.json").read_text())["settled"]
    assert (settled["precision"], settled["channels_last"]) == (precision, True)
    assert settled["reasons"]["precision"].startswith("auto:")
    payload = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    saved = payload["settled"]
    assert (saved["precision"], saved["channels_last"]) == (precision, True), "eval sees it"
    trainer = payload["config"]["trainer"]
    assert (trainer["precision"], trainer["channels_last"]) == ("auto", "auto"), (
        "the config itself stays as composed"
    )


def test_the_layout_picked_is_the_layout_trained(default_run, mnist_root, tmp_path):
    """The model trains in the layout the header names: channels_last as `auto` picks it
    on a CPU, and NCHW when trainer.channels_last=false is asked for."""
    run_dir, _ = default_run

    def second_conv(folder):  # LeNet's conv(6 -> 16): a layout of its own only in NHWC
        return load_checkpoint(folder / "checkpoints" / "last.pt")["model"]["features.3.weight"]

    assert second_conv(run_dir).is_contiguous(memory_format=torch.channels_last)
    assert not second_conv(run_dir).is_contiguous()
    off = tmp_path / "off"
    overrides = [*tiny_mnist_overrides(mnist_root), ONE_THREAD, "trainer.epochs=1"]
    result = convbench(
        "train", *overrides, "trainer.channels_last=false", f"hydra.run.dir={off}", cwd=tmp_path
    )
    assert result.code == 0, result.stderr
    assert "channels_last false (as set)" in result.stdout.splitlines()
    assert second_conv(off).is_contiguous(), "channels_last=false trains in NCHW"


def test_one_estimate_after_the_first_epoch_off_a_terminal(default_run):
    run_dir, output = default_run
    prefix = "estimate: an epoch takes "
    estimates = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(estimates) == 1, output
    assert " s here; the 1 epoch(s) left: about " in estimates[0]
    assert prefix in (run_dir / "train.log").read_text()


def test_label_smoothing_and_warm_up_are_built_from_the_config():
    cfg = compose(["trainer.label_smoothing=0.1", "scheduler.warmup_epochs=2", "trainer.epochs=6"])
    optimization = build_optimization(cfg, LeNet(10, 1, 28), CPU, epochs=cfg.trainer.epochs)
    assert optimization.loss_fn.label_smoothing == 0.1
    lr = cfg.optimizer.lr
    rates = []
    for _ in range(6):
        rates.append(optimization.optimizer.param_groups[0]["lr"])
        optimization.optimizer.step()
        optimization.scheduler.step()
    # warm-up: lr/3, 2 lr/3; then the cosine over the 4 epochs left (T_max = 6 - 2)
    expected = [lr / 3, 2 * lr / 3, *(lr * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4))]
    assert rates == pytest.approx(expected)
    plain = build_scheduler(compose([]).scheduler, torch.optim.SGD([torch.zeros(1)], lr=1.0))
    assert type(plain).__name__ == "CosineAnnealingLR", "no warm-up: the schedule alone"


def test_early_stopping_ends_the_run_and_resume_leaves_it(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        "trainer.epochs=20",
        "trainer.early_stop_patience=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["epochs"] < 20
    assert metrics["epochs"] == metrics["best_epoch"] + 1
    assert "stopping early: no better validation accuracy for 1 epochs" in result.stdout
    again = convbench("resume", str(run_dir), *TRUSTED, cwd=tmp_path)
    assert again.code == 0 and "already finished" in again.stdout
