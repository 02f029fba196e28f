"""Checkpoints (convbench.run.checkpoint): written atomically and read back without running code,
on a tiny `nn.Linear(2, 1)`; and every file that is not this run's checkpoint (another model's,
another run's, a plain PyTorch file, random bytes, a crafted pickle) refused by name with exit 2,
nothing already written lost."""

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from convbench.errors import CheckpointError
from convbench.files import TMP_MARK
from convbench.run.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from helpers.cli import tiny_mnist_overrides
from helpers.inprocess import convbench

# --- the file itself, on a tiny model ------------------------------------------------------------


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(2, 1)


def test_a_saved_model_loads_back_exactly_and_leaves_no_temporary_file(tmp_path):
    model = linear()
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"model": model.state_dict(), "state": {"epoch": 3}}, path)
    payload = load_checkpoint(path)
    assert payload["format"] == FORMAT and payload["state"] == {"epoch": 3}
    again = nn.Linear(2, 1)
    again.load_state_dict(payload["model"])
    assert all(
        torch.equal(a, b) for a, b in zip(again.parameters(), model.parameters(), strict=True)
    )
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_write_that_fails_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": linear().state_dict(), "state": {"epoch": 1}}, path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"model": {}, "state": {"epoch": 2}}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["state"] == {"epoch": 1}, "the previous checkpoint is intact"
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name], "no temporary file"


def test_a_missing_file_and_a_plain_state_dict_are_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    plain = tmp_path / "plain.pt"
    torch.save(linear().state_dict(), plain)
    with pytest.raises(CheckpointError, match=f"no '{FORMAT}' marker"):
        load_checkpoint(plain)


# --- refused by the commands that read one ------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, mnist_root) -> Path:
    folder = tmp_path_factory.mktemp("mlp")
    result = convbench(
        "train",
        "model=mlp",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.run.dir={folder / 'run'}",
        cwd=folder,
    )
    assert result.code == 0, result.stderr
    return folder / "run"


def test_checkpoint_of_another_model_names_the_differences(mnist_root, mlp_run, tmp_path):
    result = convbench(
        "train",
        "model=lenet",
        *tiny_mnist_overrides(mnist_root),
        f"trainer.init_from={mlp_run / 'checkpoints' / 'best.pt'}",
        cwd=tmp_path,
    )
    assert result.code == 2
    assert "another model" in result.stderr
    assert (
        "model._target_: convbench.models.mlp.MLP -> convbench.models.lenet.LeNet" in result.stderr
    )


def test_resume_refuses_a_last_pt_from_another_run(mnist_root, mlp_run, tmp_path):
    lenet = tmp_path / "lenet"
    assert (
        convbench(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={lenet}",
            cwd=tmp_path,
        ).code
        == 0
    )
    before = (lenet / "metrics.json").read_bytes()
    shutil.copy(mlp_run / "checkpoints" / "last.pt", lenet / "checkpoints" / "last.pt")
    result = convbench("resume", str(lenet), cwd=tmp_path)
    assert result.code == 2 and "not written by this run" in result.stderr
    assert "model._target_" in result.stderr
    assert (lenet / "metrics.json").read_bytes() == before, "nothing already written is lost"


def test_file_that_is_not_a_convbench_checkpoint(mnist_root, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    for path, expected in ((plain, "not a convbench checkpoint"), (garbage, "not a loadable")):
        result = convbench(
            "train", *tiny_mnist_overrides(mnist_root), f"trainer.init_from={path}", cwd=tmp_path
        )
        assert result.code == 2 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stdout + result.stderr


def test_a_random_file_as_last_pt_is_refused_without_torchs_unsafe_advice(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(bytes(range(256)) * 40)
    result = convbench("resume", str(tmp_path / "run"))
    assert result.code == 2, result
    assert "Traceback" not in result.stderr and "This is a bug" not in result.stderr, result
    stderr = result.stderr
    assert "not a loadable convbench checkpoint" in stderr and "Nothing was executed" in stderr
    assert "weights_only" not in stderr and "will likely succeed" not in stderr


class _Exploit:
    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_is_refused_without_running(mnist_root, tmp_path):
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
        result = convbench(*args, cwd=tmp_path)
        assert result.code == 2 and "refuses" in result.stderr, result.stderr
    assert not (tmp_path / "payload-ran").exists(), "the payload must never run"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(hostile, weights_only=True)  # the same refusal, straight from torch
