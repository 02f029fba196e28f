"""One run over two processes with DistributedDataParallel on gloo, as torchrun starts them
and as `trainer.devices=2` starts them: one run folder written by rank 0 alone, the weights of
a single process with the same global batch (within 1e-4: the ranks add their gradients in
another order), an exact resume after a SIGKILL of the whole group, a SIGTERM to one rank
stopping both at one step, validation over both ranks' shards equal to one process's,
GoogLeNet's auxiliary loss found inside the DDP wrapper, and an image folder decoded once by
rank 0 and read from its cache by the others."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from convbench.config.compose import compose
from convbench.data.loader import load_splits
from convbench.models.lenet import LeNet
from convbench.run.checkpoint import load_checkpoint
from convbench.run.folder import find_runs
from helpers.cli import (
    ONE_THREAD,
    TESTS,
    TRUSTED,
    cli_env,
    finish,
    run_cli,
    slow_overrides,
    start,
    tiny_mnist_overrides,
    wait_until,
)
from helpers.imagefolders import write_class_folders

TOLERANCE = 1e-4  # largest weight difference to one process after two epochs (seen: ~1e-5)
TIMING_KEYS = {"wall_time_s", "train_images_per_sec", "train_seconds"}


def torchrun(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "convbench",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def weights(run_dir: Path, name: str = "last.pt") -> dict:
    return load_checkpoint(run_dir / "checkpoints" / name)["model"]


def comparable(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    strip = lambda record: {k: v for k, v in record.items() if k not in TIMING_KEYS}  # noqa: E731 - a one-line filter
    return {**strip(metrics), "history": [strip(h) for h in metrics["history"]]}


def test_torchrun_makes_one_run_that_matches_one_process(mnist_root, tmp_path):
    # fp32: the tolerance is for the order in which the ranks add their gradients; bf16 (what
    # `auto` takes on some CPUs) would round each rank's half of the batch on its own.
    overrides = [*tiny_mnist_overrides(mnist_root), "trainer.batch_size=64"]
    overrides.append("trainer.precision=fp32")
    finish(torchrun("train", *overrides, cwd=tmp_path), expected=0)
    runs = find_runs(tmp_path / "outputs")
    assert len(runs) == 1, f"one folder for the run, chosen once: {runs}"
    run_dir = runs[0].path
    # events.out.tfevents.<time>.<host>.<pid>.<n>: the writing process's pid
    writers = {path.name.rsplit(".", 2)[1] for path in run_dir.glob("events.out.tfevents.*")}
    status = json.loads((run_dir / "status.json").read_text())
    assert writers == {str(status["pid"])}, "rank 0 alone wrote TensorBoard and the status"
    assert len(list(run_dir.glob("*.log"))) == 1 and (run_dir / ".hydra").is_dir()
    assert len(load_checkpoint(run_dir / "checkpoints" / "last.pt")["ranks"]) == 2

    single = tmp_path / "single"
    assert (
        run_cli(
            "train", *overrides, "trainer.num_threads=1", f"hydra.run.dir={single}", cwd=tmp_path
        ).returncode
        == 0
    )
    ours, theirs = weights(run_dir), weights(single)
    difference = max((ours[k] - theirs[k]).abs().max().item() for k in theirs)
    assert difference < TOLERANCE, difference
    epochs = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [e["epoch"] for e in epochs] == [1, 2]


def test_devices_2_equals_torchrun_and_resumes_exactly_after_a_sigkill(mnist_root, tmp_path):
    overrides = [*slow_overrides(mnist_root, tmp_path / "unused", epochs=8)]
    overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    reference = tmp_path / "reference"
    finish(torchrun("train", *overrides, f"hydra.run.dir={reference}", cwd=tmp_path))

    run_dir = tmp_path / "run"
    proc = start("train", *overrides, "trainer.devices=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    wait_until(
        lambda: last.is_file() and load_checkpoint(last)["state"]["step"] >= 10,
        proc,
        "a checkpoint in epoch 2",
    )
    # The launcher and both ranks (torch's launcher gives each rank a session of its own), as a
    # pre-emption kills a job's every process: no time to save.
    ranks = [rank_pid(run_dir, rank) for rank in (0, 1)]
    for pid in (proc.pid, *ranks):
        os.kill(pid, signal.SIGKILL)
    finish(proc, expected=-signal.SIGKILL)
    assert not (run_dir / "metrics.json").exists()

    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))  # starts its two processes itself
    for name in ("last.pt", "best.pt"):
        ours, theirs = weights(run_dir, name), weights(reference, name)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    assert comparable(run_dir) == comparable(reference)


def rank_pid(run_dir: Path, rank: int) -> int | None:
    """The pid of the process with RANK=`rank` training `run_dir` (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run_dir) in command and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    return None


def test_a_sigterm_to_one_rank_stops_both_with_one_checkpoint(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in slow_overrides(mnist_root, run_dir, epochs=3)]
    proc = start("train", *overrides, "trainer.devices=2", cwd=tmp_path)
    wait_until(lambda: (run_dir / "checkpoints" / "last.pt").is_file(), proc, "a checkpoint")
    wait_until(lambda: rank_pid(run_dir, 1) is not None, proc, "rank 1 to be found")
    os.kill(rank_pid(run_dir, 1), signal.SIGTERM)
    output = finish(proc, expected=3)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted"
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved["state"]["step"] == status["step"], "both ranks stopped at the saved step"
    assert len(saved["ranks"]) == 2
    assert f"convbench resume {run_dir.relative_to(tmp_path)}" in output


def folder_run(root: Path, run_dir: Path) -> list[str]:
    data = ["dataset=imagefolder", f"dataset.root={root}", "dataset.native_size=16"]
    short = ["trainer.epochs=1", "trainer.batch_size=8", "trainer.device=cpu"]
    return [*data, *short, "trainer.devices=2", f"hydra.run.dir={run_dir}"]


def test_rank_0_decodes_a_new_folder_and_the_others_read_its_cache(tmp_path):
    """Two real ranks (torchrun, gloo) load a new folder, then one with a corrupt image."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_class_folders(good, per_class=24)
    write_class_folders(bad, per_class=24)
    (bad / "dog" / "broken.png").write_bytes(b"not a png")
    helper = TESTS / "helpers" / "load_in_turn.py"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(helper),
        str(tmp_path),
        str(good),
        str(bad),
    ]
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert rank[0]["good"]["images"] == rank[1]["good"]["images"] == 48
    assert any(
        line.startswith("imagefolder: decoding 48 images") for line in rank[0]["good"]["log"]
    )
    assert not any("decoding" in line for line in rank[1]["good"]["log"]), "decoded once"
    assert any("48 images from the cache" in line for line in rank[1]["good"]["log"])
    assert "broken.png" in rank[0]["bad"]["error"]
    assert "rank 0 could not load the dataset" in rank[1]["bad"]["error"]
    assert rank[1]["bad"]["log"] == [], "rank 1 stopped without decoding"


def test_a_bad_image_stops_both_ranks_with_rank_0s_error(tmp_path):
    root = tmp_path / "images"
    write_class_folders(root, per_class=24)
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    result = run_cli("train", *folder_run(root, tmp_path / "run"), cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr


# --- validation over two ranks --------------------------------------------------------------------


def test_validation_over_two_ranks_equals_one_process_on_the_same_weights(mnist_root, tmp_path):
    """Each rank tests its shard and the sums are added over the ranks: checked against an
    evaluation made here, in one process, of the same weights on the whole split, with none of
    the run's code for adding up."""
    run = tmp_path / "run"
    overrides = [
        *tiny_mnist_overrides(mnist_root),
        "trainer.precision=fp32",
        "trainer.channels_last=false",
        "trainer.epochs=1",
        f"hydra.run.dir={run}",
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "convbench",
        "train",
        *overrides,
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    reported = json.loads((run / "metrics.json").read_text())["history"][0]

    cfg = compose(tiny_mnist_overrides(mnist_root))
    val = load_splits(cfg.dataset).val
    model = LeNet(num_classes=10, in_channels=1, image_size=28)
    model.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"])
    model.eval()
    images = (val.images.float() / 255 - cfg.dataset.mean[0]) / cfg.dataset.std[0]
    with torch.no_grad():
        logits = model(images)
    assert len(val) == 100  # the whole split, not a rank's 50
    accuracy = int((logits.argmax(1) == val.labels).sum()) / len(val)
    loss = nn.functional.cross_entropy(logits, val.labels).item()
    assert reported["val_acc"] == pytest.approx(accuracy, abs=1e-9)
    assert reported["val_loss"] == pytest.approx(loss, rel=1e-4)


# --- GoogLeNet's auxiliary heads over two processes -----------------------------------------------

GOOGLENET = [
    "model=googlenet",
    "model.width_multiplier=0.25",
    "dataset.train_limit=256",
    "trainer.batch_size=64",
    "trainer.epochs=1",
    "trainer.log_images=false",
    ONE_THREAD,
]


def first_epoch_loss(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["history"][0]["train_loss"]


def train_googlenet(tmp_path: Path, name: str, root: Path, *extra: str) -> float:
    data = ["dataset=mnist", f"dataset.root={root}", "dataset.val_size=100", "trainer.device=cpu"]
    result = run_cli(
        "train", *data, *GOOGLENET, *extra, f"hydra.run.dir={tmp_path / name}", "-q", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return first_epoch_loss(tmp_path / name)


def test_two_processes_train_the_auxiliary_loss_as_one_does(mnist_root, tmp_path):
    """DistributedDataParallel wraps the model and does not forward its attributes, so the
    engine must find `aux_loss` on the model inside the wrapper. With the term found, two
    processes train the same loss as one process with the same global batch; without it, the
    loss would lack 0.3 x the heads' losses (and DDP would find the heads' parameters without
    gradients)."""
    one = train_googlenet(tmp_path, "one", mnist_root, "model.aux_heads=true")
    two = train_googlenet(tmp_path, "two", mnist_root, "model.aux_heads=true", "trainer.devices=2")
    without = train_googlenet(tmp_path, "without", mnist_root, "model.aux_heads=false")
    assert one - without > 0.5, "the auxiliary term adds 0.3 x two heads' losses"
    assert abs(two - one) < 0.02, (one, two)
