"""A corpus of user mistakes: each exits 2 with a one-paragraph message and no traceback."""

import gzip
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from helpers.cli import tiny_mnist_overrides
from helpers.fakedata import write_cifar_dataset

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
]


@pytest.mark.parametrize(("overrides", "expected"), TYPO_CASES, ids=lambda v: str(v))
def test_config_mistakes(cli, tmp_path, overrides, expected):
    result = cli("train", *overrides, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "+trainer" not in result.stderr and "+model" not in result.stderr  # no '+key' advice
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one paragraph"
    assert not (tmp_path / "outputs").exists(), "a config error must not start a run"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.activation=swishy", "relu, tanh, sigmoid, gelu"),
        ("model.pooling=median", "max, avg, none"),
        ("model.stride=9", "do not fit"),
    ],
)
def test_model_values_rejected_when_built(cli, mnist_root, tmp_path, override, expected):
    result = cli("train", *tiny_mnist_overrides(mnist_root), override, cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


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
def test_corrupt_idx_files_are_named(cli, mnist_root, tmp_path, name, damage):
    root = _broken_copy(mnist_root, tmp_path / "data", name, damage)
    overrides = [
        o if not o.startswith("dataset.root=") else f"dataset.root={root}"
        for o in tiny_mnist_overrides(mnist_root)
    ]
    result = cli("train", *overrides, cwd=tmp_path)
    assert result.returncode == 2 and name in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_corrupt_cifar_batch_is_named(cli, tmp_path):
    root = write_cifar_dataset(tmp_path / "cifar")
    (root / "data_batch_3").write_bytes(b"\x80\x02}q\x00")  # a pickle cut short
    result = cli(
        "train", "dataset=cifar10", f"dataset.root={root}", "trainer.device=cpu", cwd=tmp_path
    )
    assert result.returncode == 2 and "data_batch_3" in result.stderr


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, mnist_root) -> Path:
    from helpers.cli import run_cli

    folder = tmp_path_factory.mktemp("mlp")
    result = run_cli(
        "train",
        "model=mlp",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.run.dir={folder / 'run'}",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_checkpoint_of_another_model_names_the_differences(cli, mnist_root, mlp_run, tmp_path):
    result = cli(
        "train",
        "model=lenet",
        *tiny_mnist_overrides(mnist_root),
        f"trainer.init_from={mlp_run / 'checkpoints' / 'best.pt'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "another model" in result.stderr
    assert (
        "model._target_: convbench.models.mlp.MLP -> convbench.models.lenet.LeNet" in result.stderr
    )


def test_resume_refuses_a_last_pt_from_another_run(cli, mnist_root, mlp_run, tmp_path):
    from helpers.cli import run_cli

    lenet = tmp_path / "lenet"
    assert (
        run_cli(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={lenet}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    before = (lenet / "metrics.json").read_bytes()
    shutil.copy(mlp_run / "checkpoints" / "last.pt", lenet / "checkpoints" / "last.pt")
    result = cli("resume", str(lenet), cwd=tmp_path)
    assert result.returncode == 2 and "not written by this run" in result.stderr
    assert "model._target_" in result.stderr
    assert (lenet / "metrics.json").read_bytes() == before, "nothing already written is lost"


def test_file_that_is_not_a_convbench_checkpoint(cli, mnist_root, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    for path, expected in ((plain, "not a convbench checkpoint"), (garbage, "not a loadable")):
        result = cli(
            "train", *tiny_mnist_overrides(mnist_root), f"trainer.init_from={path}", cwd=tmp_path
        )
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stdout + result.stderr


class _Exploit:
    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_is_refused_without_running(cli, mnist_root, tmp_path):
    _Exploit.marker = str(tmp_path / "payload-ran")
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "convbench.run.checkpoint", "version": 1, "model": _Exploit()}, hostile)
    assert not (tmp_path / "payload-ran").exists()
    run_dir = tmp_path / "victim"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(hostile, run_dir / "checkpoints" / "last.pt")
    for args in (
        ("train", *tiny_mnist_overrides(mnist_root), f"trainer.init_from={hostile}"),
        ("resume", str(run_dir)),
    ):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and "refuses" in result.stderr, result.stderr
    assert not (tmp_path / "payload-ran").exists(), "the payload must never run"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(hostile, weights_only=True)  # the same refusal, straight from torch


def test_resume_of_a_folder_without_checkpoints(cli, tmp_path):
    result = cli("resume", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_sweep_with_a_failing_job_finishes_the_others(cli, mnist_root, tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(
        "train",
        "-m",
        "model.activation=relu,swishy,tanh",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "1 job(s) of the sweep failed" in result.stderr and "job 1" in result.stderr
    statuses = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        statuses[job.name.split("_")[0]] = (job / "status.json").read_text()
    assert '"finished"' in statuses["0"] and '"finished"' in statuses["2"]
    assert '"failed"' in statuses["1"] and "swishy" in statuses["1"]
    assert len(list(sweep.glob("[02]_*/metrics.json"))) == 2
    assert not list(sweep.glob("1_*/metrics.json"))
