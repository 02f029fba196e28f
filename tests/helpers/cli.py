"""Running convbench as a user does: a real process, `python -m convbench`, in a folder of the
test's own."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
# A tiny net gains nothing from more threads, and they spin-wait when the cores are busy.
ONE_THREAD = "trainer.num_threads=1"
# The tests' own model classes (helpers.slowmodels) are vouched for by this config folder: a
# run folder alone may name only convbench's models (convbench.config.trust), so `resume` and `eval`
# of a run of theirs take it, as a user's would.
TRUSTED = ("--config-dir", str(TESTS / "helpers" / "conf"))


def cli_env(extra: dict | None = None) -> dict:
    """The environment of a convbench process: tests/ importable (helpers.slowmodels) before
    the caller's PYTHONPATH, output unbuffered, and no HYDRA_FULL_ERROR from the calling shell."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 300, env_extra=None):
    """Run `convbench ARGS` to its end; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "convbench", *args],
        cwd=cwd,
        env=cli_env(env_extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str, cwd: Path, env_extra=None, **popen) -> subprocess.Popen:
    """Start `convbench ARGS` in the background (to signal or kill it); `popen` goes to Popen
    (preexec_fn, start_new_session)."""
    return subprocess.Popen(
        [sys.executable, "-m", "convbench", *args],
        cwd=cwd,
        env=cli_env(env_extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen, expected: int = 0) -> str:
    """Wait for a started process; asserts its exit code and returns its output."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == expected, f"rc={proc.returncode}\n{out}\n{err}"
    return out + err


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll `condition()` while `proc` runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.01)


def wait_for_new_checkpoint(last: Path, proc: subprocess.Popen, after: float) -> None:
    """Until `last` was written after the time `after` (the process must still run)."""
    deadline = time.monotonic() + 120
    while not (last.is_file() and last.stat().st_mtime > after):
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)


def stop_after_first_checkpoint(proc: subprocess.Popen, run_dir: Path, signum: int) -> str:
    """Once `proc` has saved checkpoints/last.pt, 0.2 s later (mid-training), send `signum`;
    returns the output of its end: exit 3 for SIGTERM (saved and stopped), killed otherwise."""
    wait_for_new_checkpoint(run_dir / "checkpoints" / "last.pt", proc, 0.0)
    time.sleep(0.2)
    proc.send_signal(signum)
    return finish(proc, expected=3 if signum == signal.SIGTERM else -signum)


def tiny_mnist_overrides(root: Path) -> list[str]:
    """Overrides for a seconds-long run on the tiny MNIST fixture. Without TensorBoard's pictures
    (about half a second a run): the tests that look at them turn them on."""
    return [
        "dataset=mnist",
        f"dataset.root={root}",
        "dataset.val_size=100",
        "trainer.epochs=2",
        "trainer.batch_size=64",
        "trainer.eval_batch_size=256",
        "trainer.log_every_n_steps=2",
        "trainer.device=cpu",
        "trainer.log_images=false",
    ]


def slow_overrides(root: Path, run_dir: Path, epochs: int = 3) -> list[str]:
    """A run slow enough to be signalled mid-training: one thread, fixed seed, a sleeping
    LeNet (helpers.slowmodels), last.pt after every step."""
    return [
        "dataset=mnist",
        f"dataset.root={root}",
        "dataset.val_size=100",
        f"trainer.epochs={epochs}",
        "trainer.batch_size=64",
        "trainer.device=cpu",
        ONE_THREAD,
        "trainer.checkpoint_every_n_steps=1",
        "trainer.log_every_n_steps=1",
        "model._target_=helpers.slowmodels.SlowLeNet",
        "+model.seconds_per_step=0.05",
        f"hydra.run.dir={run_dir}",
    ]
