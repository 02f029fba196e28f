"""Run folders: what a finished run must leave (the README's "The run folder"), and what runs in
other states leave, made by hand."""

import json
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convbench.run.checkpoint import load_checkpoint

SCALAR_TAGS = {
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "lr",
    "perf/images_per_sec",
}
METRIC_KEYS = {
    "test_acc",
    "best_val_acc",
    "epochs",
    "train_images_per_sec",
    "params",
    "wall_time_s",
}


def scalar_tags(run_dir: Path) -> set[str]:
    tags = set()
    for event_file in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def assert_complete_run(run_dir: Path, epochs: int) -> dict:
    """Every file a finished run folder must hold (README, "The run folder")."""
    hydra_dir = run_dir / ".hydra"
    assert (hydra_dir / "config.yaml").is_file() and (hydra_dir / "overrides.yaml").is_file()
    assert scalar_tags(run_dir) >= SCALAR_TAGS
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["epochs"] == epochs and metrics["status"] == "finished"
    assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["train_images_per_sec"] > 0
    saved_config = yaml.safe_load((hydra_dir / "config.yaml").read_text())
    for name in ("last.pt", "best.pt"):
        checkpoint = load_checkpoint(run_dir / "checkpoints" / name)
        assert checkpoint["config"]["model"]["_target_"] == saved_config["model"]["_target_"]
        assert checkpoint["config"]["trainer"]["epochs"] == epochs
        assert sum(t.numel() for t in checkpoint["model"].values()) == metrics["params"]
    return metrics


def dead_pid() -> int:
    """A pid that no process holds (none under /proc): what a run whose process has gone
    left in its status.json."""
    highest = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(pid for pid in range(highest - 1, 1, -1) if not Path(f"/proc/{pid}").exists())


def stopped_folder_run(folder: Path) -> tuple[Path, Path]:
    """(a run on an image folder, the folder), both under `folder`: trained two epochs in this
    process, then made to look as if it had been stopped before its test (status interrupted,
    no metrics.json)."""
    from helpers.imagefolders import write_class_folders
    from helpers.inprocess import convbench

    images = folder / "images"
    write_class_folders(images, per_class=20)
    run = folder / "run"
    result = convbench(
        "train",
        "dataset=imagefolder",
        f"dataset.root={images}",
        "dataset.native_size=12",
        "trainer.epochs=2",
        "trainer.num_threads=1",
        "trainer.log_images=false",
        f"hydra.run.dir={run}",
        "-q",
        cwd=folder,
    )
    assert result.code == 0, result
    (run / "metrics.json").unlink()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps(status | {"status": "interrupted"}))
    return run, images
