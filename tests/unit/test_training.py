"""What training does, checked through what it does to weights and losses rather than through
the settings it reads: gradient clipping bounds a step, label smoothing changes the loss the
run trains on, trainer.nonfinite_skips skips exactly N bad steps, and a diverged run stops
(exit 4) without saving, without calling itself finished, and says what it kept: on the engine
with a tiny model, then as `convbench train` (in this process) on the tiny MNIST fixture."""

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from convbench.config.compose import compose
from convbench.data.batches import Batches, Split
from convbench.engine import EngineOptions, Optimization, RunIO, TrainState, fit, train_one_epoch
from convbench.errors import EXIT_DIVERGED, Diverged
from convbench.files import write_json
from convbench.monitor.console import NoProgress
from convbench.run.build import build_model, build_optimization, engine_options
from convbench.run.checkpoint import Checkpointer, Settled, load_checkpoint
from convbench.run.folder import RunFolder
from convbench.run.ranks import Solo
from convbench.run.signals import StopRequest
from helpers.cli import tiny_mnist_overrides
from helpers.imagefolders import write_class_folders
from helpers.inprocess import convbench

SETTLED = Settled(
    precision="fp32", channels_last=False, mean=[0.5], std=[0.5], fingerprint={}, reasons={}
)


def batches(count: int = 64, batch_size: int = 16) -> Batches:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 1, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % 4
    return Batches(
        Split(images, labels),
        batch_size=batch_size,
        device=torch.device("cpu"),
        mean=[0.5],
        std=[0.5],
        image_size=4,
    )


def optimization(model: nn.Module, lr: float, *, smoothing: float = 0.0, momentum: float = 0.0):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return Optimization(
        nn.CrossEntropyLoss(label_smoothing=smoothing),
        optimizer,
        torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0),
        torch.amp.GradScaler("cpu", enabled=False),
    )


def from_config(model: nn.Module, *overrides: str) -> tuple[Optimization, EngineOptions]:
    """The optimization objects and engine options a run of these overrides builds (plain SGD:
    no momentum, no weight decay, no schedule), as convbench.run.build makes them."""
    cfg = compose(
        [
            "optimizer.momentum=0",
            "optimizer.nesterov=false",
            "optimizer.weight_decay=0",
            "scheduler=none",
            "trainer.precision=fp32",
            *overrides,
        ]
    )
    return build_optimization(
        cfg, model, torch.device("cpu"), epochs=cfg.trainer.epochs
    ), engine_options(cfg, SETTLED)


def io(model, optimized: Optimization, folder) -> RunIO:
    checkpointer = Checkpointer(
        RunFolder(folder),
        epochs=3,
        config={"model": {}},
        settled=SETTLED,
        model=model,
        optimization=optimized,
        writer=SummaryWriter(str(folder / "tb")),
        group=Solo(),
    )
    return RunIO(
        writer=checkpointer.writer,
        progress=NoProgress(),
        checkpointer=checkpointer,
        stop=StopRequest(),
        group=Solo(),
    )


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))


def test_clipping_bounds_every_step_by_the_norm(tmp_path):
    """Plain SGD at lr 1 moves the weights by the clipped gradient: at most the norm, 1e-3
    here, where the unclipped step is a hundred times longer."""
    moved = {}
    for clip in ("null", 1e-3):
        model = linear()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        optimized, options = from_config(model, "optimizer.lr=1", f"trainer.grad_clip_norm={clip}")
        one_batch = batches(count=16)
        train_one_epoch(
            model,
            one_batch,
            optimized,
            state=TrainState(),
            options=options,
            io=io(model, optimized, tmp_path),
        )
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moved[clip] = float((after - before).norm())
    assert moved[1e-3] <= 1e-3 * (1 + 1e-5)
    assert moved["null"] > 100 * 1e-3


def test_label_smoothing_is_the_loss_trained_on(tmp_path):
    """At lr 0 nothing changes, so the epoch's loss is the loss of the first weights: with
    smoothing 0.2 it is cross-entropy against smoothed targets, which differs from plain."""
    data = batches(count=32, batch_size=32)
    images, labels = next(data.epoch(0))
    losses = {}
    for smoothing in (0.0, 0.2):
        model = linear()
        optimized, options = from_config(
            model, "optimizer.lr=0", f"trainer.label_smoothing={smoothing}"
        )
        result = train_one_epoch(
            model,
            data,
            optimized,
            state=TrainState(),
            options=options,
            io=io(model, optimized, tmp_path),
        )
        expected = nn.functional.cross_entropy(model(images), labels, label_smoothing=smoothing)
        assert result["loss"] == pytest.approx(float(expected), rel=1e-6)
        losses[smoothing] = result["loss"]
    assert abs(losses[0.2] - losses[0.0]) > 1e-3


class NaNOnSteps(nn.Module):
    """A linear model whose loss is NaN on the given training steps (1-based)."""

    def __init__(self, bad: set[int]):
        super().__init__()
        self.layer, self.bad, self.steps = linear(), bad, 0

    def forward(self, x):
        out = self.layer(x)
        if self.training:
            self.steps += 1
            if self.steps in self.bad:
                return out * float("nan")
        return out


@pytest.mark.parametrize("allowed, stops", [(2, False), (1, True), (3, False)])
def test_nonfinite_skips_skip_exactly_that_many_steps(tmp_path, allowed, stops):
    model = NaNOnSteps(bad={2, 3})
    optimized, options = from_config(
        model, "optimizer.lr=0.1", f"trainer.nonfinite_skips={allowed}"
    )
    state = TrainState()

    def run():
        return train_one_epoch(
            model,
            batches(),
            optimized,
            state=state,
            options=options,
            io=io(model, optimized, tmp_path),
        )

    if stops:
        with pytest.raises(Diverged, match=r"more than trainer\.nonfinite_skips=1"):
            run()
        return
    result = run()
    assert state.skipped_steps == 2 and state.step == 2  # 4 batches, 2 skipped
    assert math.isfinite(result["loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def fit_epochs(model, optimized, folder, epochs: int = 3, max_loss: float = math.inf):
    state = TrainState()
    fit(
        model,
        {"train": batches(), "val": batches(count=32)},
        optimized,
        state=state,
        epochs=epochs,
        num_classes=4,
        options=EngineOptions(log_every_n_steps=1, max_loss=max_loss, log_images=False),
        io=io(model, optimized, folder),
    )
    return state


def test_a_loss_beyond_any_sane_scale_stops_the_run_before_a_save(tmp_path):
    model = linear()
    with pytest.raises(Diverged) as diverged:
        fit_epochs(model, optimization(model, lr=1e6), tmp_path, max_loss=100 * math.log(4))
    assert diverged.value.exit_code == EXIT_DIVERGED == 4
    assert "no checkpoint had been written yet" in str(diverged.value)
    assert not RunFolder(tmp_path).last.exists() and not RunFolder(tmp_path).best.exists()


def test_a_runs_sane_scale_is_a_hundred_times_an_untrained_nets_loss(tmp_path):
    """The bound a real run checks (engine_options): 100 x ln(classes), where a net that guesses
    uniformly starts; a loss of 1e30 is beyond it for ten classes and for three."""
    write_class_folders(tmp_path / "images", classes=("a", "b", "c"), per_class=2)
    folder = ["dataset=imagefolder", f"dataset.root={tmp_path / 'images'}"]
    for overrides, classes in ((["dataset=mnist"], 10), (folder, 3)):
        bound = engine_options(compose(overrides), SETTLED).max_loss
        assert bound == pytest.approx(100 * math.log(classes))
        assert bound < 1e30


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_shipped_optimizers_use_the_fused_kernel_and_a_resume_keeps_the_saved_one(name):
    """`fused: true` in conf/optimizer reaches the optimizer; a checkpoint saved by a loop-kernel
    optimizer (a run from before the setting) loads back into a loop-kernel one, so its resume
    takes the steps it would have taken."""
    cfg = compose([f"optimizer={name}", "model=mlp", "dataset=mnist"])
    model = build_model(cfg, torch.device("cpu"))
    optimizer = build_optimization(cfg, model, torch.device("cpu"), epochs=1).optimizer
    assert optimizer.param_groups[0]["fused"] is True
    before = type(optimizer)(model.parameters(), lr=0.01)  # torch's default: a loop on a CPU
    optimizer.load_state_dict(before.state_dict())
    assert not optimizer.param_groups[0]["fused"]


class ForgetsInEval(nn.Module):
    """Trains well; from its second validation on, its outputs are NaN."""

    def __init__(self):
        super().__init__()
        self.layer, self.validations = linear(), 0

    def forward(self, x):
        out = self.layer(x)
        if not self.training:
            self.validations += 1 if x.shape[0] else 0
            if self.validations > 2:  # two validation batches per epoch
                return out * float("nan")
        return out


def test_a_nan_validation_loss_stops_the_run_and_keeps_the_good_epoch(tmp_path):
    model = ForgetsInEval()
    optimized = optimization(model, lr=0.1)
    with pytest.raises(Diverged, match="validation loss became NaN or infinite after epoch 2"):
        fit_epochs(model, optimized, tmp_path)
    saved = torch.load(RunFolder(tmp_path).last, weights_only=True)
    assert saved["state"]["epoch"] == 1, "the diverged epoch is not saved"


def test_the_diverged_message_says_what_was_kept(tmp_path):
    model = ForgetsInEval()
    with pytest.raises(Diverged) as diverged:
        fit_epochs(model, optimization(model, lr=0.1), tmp_path)
    assert "last.pt and best.pt keep the last good epoch's state" in str(diverged.value)


def test_metrics_json_stays_valid_json_whatever_the_numbers(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"test_loss": float("nan"), "history": [{"loss": float("inf")}], "ok": 1.5})

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    saved = json.loads(path.read_text(), parse_constant=refuse)
    assert saved == {"test_loss": None, "history": [{"loss": None}], "ok": 1.5}


# --- the same, as a user meets it: `convbench train` (in this process) -------------------------


def test_nan_stops_with_a_clear_message_and_best_pt_untouched(mnist_root, tmp_path):
    # Epoch 1 trains normally; then the step scheduler multiplies lr by 1e12: the loss explodes.
    run_dir = tmp_path / "run"
    result = convbench(
        "train",
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.val_size=100",
        "trainer.epochs=3",
        "trainer.device=cpu",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=1e12",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.code == 4, result.stderr
    message = result.stderr
    # 500 training images in batches of 128: epoch 2 is steps 5 to 8, none checked before its end
    assert "in epoch 2 (between steps 5 and 8)" in message, message
    assert "last.pt and best.pt keep the last good epoch" in message, message
    assert "Traceback" not in message
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(run_dir / "checkpoints" / name)
        assert saved["state"]["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert not (run_dir / "metrics.json").exists()


def test_nonfinite_skips_are_bounded(mnist_root, tmp_path):
    result = convbench(
        "train",
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.val_size=100",
        "trainer.epochs=3",
        "trainer.device=cpu",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=1e12",
        "trainer.nonfinite_skips=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.code == 4
    assert "more than trainer.nonfinite_skips=2" in result.stderr
    assert result.stdout.count("skipped") >= 2


@pytest.mark.parametrize(("train_limit", "epochs"), [(128, 5), (320, 2)])
def test_a_step_budget_trains_the_epochs_it_comes_to(mnist_root, tmp_path, train_limit, epochs):
    """trainer.steps=10 at batch 64: 5 epochs of 2 steps on 128 images, 2 of 5 on 320; the
    cosine schedule spans the epochs trained, and a resume reads them from the checkpoint."""
    run_dir = tmp_path / "run"
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        f"dataset.train_limit={train_limit}",
        "trainer.steps=10",
        "trainer.epochs=3",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert f"trainer.steps=10: {epochs} epochs of {10 // epochs} steps" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == len(metrics["history"]) == epochs
    assert metrics["history"][-1]["step"] == 10
    rates = [entry["lr"] for entry in metrics["history"]]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == epochs, "one cosine"
    assert json.loads((run_dir / "status.json").read_text())["epochs"] == epochs
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved["settled"]["epochs"] == epochs


def test_a_step_budget_the_warm_up_would_take_whole_is_refused(mnist_root, tmp_path):
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        "dataset.train_limit=320",
        "trainer.steps=5",
        "scheduler.warmup_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.code == 2, result.stderr
    assert "trainer.steps=5 comes to 1 epoch(s) of 5 steps" in result.stderr
    assert "Traceback" not in result.stderr
