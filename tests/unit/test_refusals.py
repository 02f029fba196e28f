"""Bad input gets one paragraph and its exit code, never a traceback, and nothing already
written is lost: command lines the schema alone cannot refuse, files that lie, folders that
moved or changed. Each case runs `convbench` in this process (helpers.inprocess)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from convbench.errors import EXIT_USER_ERROR, EXIT_WRITE_FAILED
from helpers.imagefolders import write_class_folders
from helpers.inprocess import convbench

TINY = [
    "dataset=mnist",
    "dataset.val_size=100",
    "trainer.device=cpu",
    "trainer.num_threads=1",
    "trainer.log_images=false",
]


def refused(*args: str, code: int = EXIT_USER_ERROR):
    result = convbench(*args)
    assert result.code == code, result
    assert "Traceback" not in result.stderr and "This is a bug" not in result.stderr, result
    return result.stderr


@pytest.mark.parametrize(
    "override, says",
    [
        ("+trainer.epoch=3", "Did you mean trainer.epochs?"),
        ("+dataset.augment.flips=true", "Did you mean dataset.augment.flip?"),
        ("optimizer.lr=nan", "optimizer.lr=nan is not a learning rate"),
        ("model=null", "model=null leaves the run without a model: choose one of"),
        ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs=-1 is out of range"),
        ("trainer.epochs=1000000000000", "trainer.epochs=1000000000000 is out of range"),
        ("dataset.augment.crop_padding=40", "is not below the images' side"),
        ("trainer.devices=1024", "asks for more processes than this machine has"),
    ],
)
def test_a_command_line_the_schema_cannot_refuse_is_refused_before_a_folder(
    tmp_path, monkeypatch, override, says
):
    monkeypatch.chdir(tmp_path)
    stderr = refused("train", override)
    assert says in " ".join(stderr.split())
    assert not (tmp_path / "outputs").exists()


def test_a_model_too_big_for_memory_is_refused_with_its_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stderr = " ".join(refused("train", "model=mlp", "dataset.image_size=4096").split())
    assert "MLP has 8,590,069,002 parameters" in stderr and "GB available" in stderr


def test_a_config_folder_with_broken_yaml_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text("_target_: [unclosed\n")
    stderr = refused("train", "--config-dir", str(tmp_path / "conf"), "model=mine")
    assert "mine.yaml" in stderr and "not valid YAML" in stderr


@pytest.mark.parametrize("port", ["-1", "65536"])
def test_tensorboard_refuses_a_port_that_is_no_port(tmp_path, port):
    assert f"--port {port} is not a port" in refused("tb", str(tmp_path), "--port", port)


def test_a_random_file_as_last_pt_is_refused_without_torchs_unsafe_advice(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(bytes(range(256)) * 40)
    stderr = refused("resume", str(tmp_path / "run"))
    assert "not a loadable convbench checkpoint" in stderr and "Nothing was executed" in stderr
    assert "weights_only" not in stderr and "will likely succeed" not in stderr


def test_a_malformed_status_file_spoils_only_its_own_row(tmp_path):
    for name, status in (
        ("good", {"status": "finished", "best_val_acc": 0.5, "epoch": 2}),
        ("bad", {"status": "finished", "best_val_acc": "high", "epoch": "two"}),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text(json.dumps(status))
        (tmp_path / name / "metrics.json").write_text(json.dumps({"test_acc": 0.4}))
    result = convbench("runs", str(tmp_path), "--json")
    assert result.code == 0, result
    rows = {Path(row["path"]).name: row for row in json.loads(result.stdout)}
    assert rows["good"]["best_val_acc"] == 0.5
    assert rows["bad"]["best_val_acc"] is None and rows["bad"]["epoch"] is None
    assert rows["bad"]["status"] == "finished" and rows["bad"]["test_acc"] == 0.4


def test_a_run_folder_of_the_users_own_files_is_not_written(tmp_path, monkeypatch, mnist_root):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("my own numbers\n")
    stderr = refused("train", *TINY, f"dataset.root={mnist_root}", f"hydra.run.dir={mine}")
    assert "files of its own (metrics.json)" in stderr
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.json"]
    assert (mine / "metrics.json").read_text() == "my own numbers\n"


@pytest.fixture
def stopped_folder_run(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(a run on an image folder, the folder): trained two epochs, then made to look as if it
    had been stopped before its test (status interrupted, no metrics.json)."""
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    write_class_folders(images, per_class=20)
    run = tmp_path / "run"
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
    )
    assert result.code == 0, result
    (run / "metrics.json").unlink()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps(status | {"status": "interrupted"}))
    return run, images


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("train.log", ".convbench.lock")
    }


def test_resume_refuses_data_that_changed_since_the_start(stopped_folder_run):
    run, images = stopped_folder_run
    before = snapshot(run)
    write_class_folders(images, per_class=25)  # five more images per class
    stderr = " ".join(refused("resume", str(run)).split())
    assert "is not the data this run started on" in stderr and "train, val, test" in stderr
    assert snapshot(run) == before


def test_resume_after_the_data_moved_says_where_it_looked(stopped_folder_run, tmp_path):
    run, images = stopped_folder_run
    shutil.move(images, tmp_path / "elsewhere")
    stderr = refused("resume", str(run))
    assert f"dataset.root={images} is not a folder" in stderr


def test_resume_on_a_read_only_file_system_is_a_write_failure(stopped_folder_run, tmp_path):
    run, _ = stopped_folder_run
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=True)
    try:
        shutil.copytree(run, mount / "run")
        before = snapshot(mount / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        stderr = refused("resume", str(mount / "run"), code=EXIT_WRITE_FAILED)
        assert "Read-only file system" in stderr
        assert snapshot(mount / "run") == before
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_an_image_folder_config_read_back_keeps_its_yaml(stopped_folder_run):
    """The run folder's .hydra/config.yaml is the config as Hydra composed it: `auto` and the
    missing statistics stay as written; what the run settled is beside it."""
    run, _ = stopped_folder_run
    composed = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert composed["trainer"]["precision"] == "auto"
    assert composed["dataset"]["mean"] is None
