"""Bad input gets one paragraph and its exit code, never a traceback, and nothing already
written is lost: a corpus of user mistakes on the command line, command lines the schema alone
cannot refuse, data files that lie, folders that moved or changed. Each case runs `convbench`
in this process (helpers.inprocess)."""

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml

from convbench.errors import EXIT_USER_ERROR
from helpers import runfolders
from helpers.cli import tiny_mnist_overrides
from helpers.fakedata import write_cifar_dataset
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


# --- the command line --------------------------------------------------------------------------

TYPO_CASES = [
    # (overrides, text the message must contain)
    (["trainer.epoch=3"], "Did you mean trainer.epochs?"),
    (["model.activaton=tanh"], "Did you mean model.activation?"),
    (["optimizer.lrr=0.1"], "Did you mean optimizer.lr?"),
    (["dataset.train_limt=100"], "Did you mean dataset.train_limit?"),
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["trainer.batch_size=1.5"], "trainer.batch_size"),
    (["trainer.device=gpu"], "auto, cpu, cuda, mps"),
    (["model=lenet5"], "Did you mean model=lenet?"),
    (["dataset=cifar"], "choose one of cifar10, fashionmnist, imagefolder, mnist"),
    (["optimizer=adm"], "Did you mean optimizer=adam?"),
    (["scheduler=cosin"], "Did you mean scheduler=cosine?"),
    (["model"], "model"),  # not an override at all
    (["model=resnet9000"], "resnet9000"),
    (["dataset=imagenet42"], "cifar10"),
]


@pytest.mark.parametrize(("overrides", "expected"), TYPO_CASES, ids=lambda v: str(v))
def test_config_mistakes(tmp_path, overrides, expected):
    result = convbench("train", *overrides, cwd=tmp_path)
    assert result.code == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "+trainer" not in result.stderr and "+model" not in result.stderr  # no '+key' advice
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one paragraph"
    assert not (tmp_path / "outputs").exists(), "a config error must not start a run"


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
        ("dataset.augment.illumination=1.5", "dataset.augment.illumination=1.5 is out of range"),
        ("augment=confounder", "augment=confounder"),
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


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.activation=swishy", "relu, tanh, sigmoid, gelu"),
        ("model.pooling=median", "max, avg, none"),
        ("model.stride=9", "do not fit"),
    ],
)
def test_model_values_rejected_when_built(mnist_root, tmp_path, override, expected):
    result = convbench("train", *tiny_mnist_overrides(mnist_root), override, cwd=tmp_path)
    assert result.code == 2 and expected in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


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


# --- data files that lie -----------------------------------------------------------------------


def test_missing_dataset_exits_2_naming_where_it_looked(tmp_path):
    result = convbench(
        "train",
        "dataset=mnist",
        f"dataset.root={tmp_path / 'nowhere'}",
        "trainer.device=cpu",
        cwd=tmp_path,
    )
    assert result.code == 2
    assert str(tmp_path / "nowhere") in result.stderr and "Traceback" not in result.stderr


def _broken_copy(source: Path, target: Path, name: str, damage) -> Path:
    shutil.copytree(source, target)
    path = target / name
    path.write_bytes(damage(path.read_bytes()))
    return target


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        (
            "train-images-idx3-ubyte.gz",
            lambda b: gzip.compress(gzip.decompress(b)[:-100]),
        ),  # truncated
        ("t10k-labels-idx1-ubyte.gz", lambda b: b[: len(b) // 2]),  # cut gzip stream
        ("train-labels-idx1-ubyte.gz", lambda b: gzip.compress(b"\x07" * 50)),
    ],  # not IDX at all
)
def test_corrupt_idx_files_are_named(mnist_root, tmp_path, name, damage):
    root = _broken_copy(mnist_root, tmp_path / "data", name, damage)
    overrides = [
        o if not o.startswith("dataset.root=") else f"dataset.root={root}"
        for o in tiny_mnist_overrides(mnist_root)
    ]
    result = convbench("train", *overrides, cwd=tmp_path)
    assert result.code == 2 and name in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_corrupt_cifar_batch_is_named(tmp_path):
    root = write_cifar_dataset(tmp_path / "cifar")
    (root / "data_batch_3").write_bytes(b"\x80\x02}q\x00")  # a pickle cut short
    result = convbench(
        "train", "dataset=cifar10", f"dataset.root={root}", "trainer.device=cpu", cwd=tmp_path
    )
    assert result.code == 2 and "data_batch_3" in result.stderr


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


# --- run folders: the user's own, moved or changed ----------------------------------------------


def test_a_run_folder_of_the_users_own_files_is_not_written(tmp_path, monkeypatch, mnist_root):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("my own numbers\n")
    stderr = refused("train", *TINY, f"dataset.root={mnist_root}", f"hydra.run.dir={mine}")
    assert "files of its own (metrics.json)" in stderr
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.json"]
    assert (mine / "metrics.json").read_text() == "my own numbers\n"


def test_resume_of_a_folder_without_checkpoints(tmp_path):
    result = convbench("resume", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.code == 2 and "does not exist" in result.stderr


@pytest.fixture
def stopped_folder_run(tmp_path) -> tuple[Path, Path]:
    """(a run on an image folder, the folder): trained two epochs, then made to look as if it
    had been stopped before its test (helpers.runfolders)."""
    return runfolders.stopped_folder_run(tmp_path)


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


def test_an_image_folder_config_read_back_keeps_its_yaml(stopped_folder_run):
    """The run folder's .hydra/config.yaml is the config as Hydra composed it: `auto` and the
    missing statistics stay as written; what the run settled is beside it."""
    run, _ = stopped_folder_run
    composed = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert composed["trainer"]["precision"] == "auto"
    assert composed["dataset"]["mean"] is None
