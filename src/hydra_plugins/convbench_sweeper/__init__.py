"""convbench's Hydra sweeper: Hydra's basic sweeper (the same grid, batches and job numbers),
except that
- a job's folder is named by the swept keys only (`3_model.activation=gelu`; every override
  stays in the job's .hydra/overrides.yaml), so the names stay short and readable, and
- a job whose folder already holds a finished run is not launched again.

Running a sweep into its own folder a second time therefore finishes it: finished jobs are
skipped (their folders untouched), a job with a checkpoint continues from it (convbench's task
resumes it), a job that never started starts. `convbench resume SWEEP_DIR` does exactly that,
with the sweep's recorded overrides. Any launcher works: jobs are handed to it as Hydra's own
sweeper hands them, in runs of consecutive job numbers.

Hydra finds sweepers only under the `hydra_plugins` namespace package, hence this home.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from convbench.run.folder import RunFolder


@dataclass
class ConvbenchSweeperConf:
    _target_: str = "hydra_plugins.convbench_sweeper.ConvbenchSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045 - OmegaConf 2.3.0 reads Optional only
    params: Optional[dict[str, str]] = None  # noqa: UP045 - as above


ConfigStore.instance().store(
    group="hydra/sweeper", name="convbench", node=ConvbenchSweeperConf, provider="convbench"
)


class ConvbenchSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        self.overrides = self.split_arguments(overrides, self.max_batch_size)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self._name_jobs_by_swept_keys(overrides)
        # Where no run under the sweep's folder is finished (a new sweep), no job is: its
        # folder need not be found by composing its config.
        self._may_hold_finished = RunFolder.any_finished_under(sweep_dir)
        returns, first = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = []
            for start, jobs in self._runs_to_launch(batch, first):
                results += self.launcher.launch(jobs, initial_job_idx=start)
            for result in results:
                _ = result.return_value  # raises a failed job's exception, as Hydra's sweeper
            first += len(batch)
            returns.append(results)
        return returns

    def _name_jobs_by_swept_keys(self, overrides) -> None:
        """Leave the keys every job shares out of the jobs' folder names (Hydra's
        override_dirname.exclude_keys, handed to each job's config as a Hydra override)."""
        shared = sorted({o.key_or_group for o in overrides if not o.is_sweep_override()})
        if not shared:
            return
        config = self.config.hydra
        excluded = [*config.job.config.override_dirname.exclude_keys, *shared]
        listed = ",".join("'" + key.replace("'", "\\'") + "'" for key in excluded)
        with open_dict(config):
            config.overrides.hydra.append(
                f"hydra.job.config.override_dirname.exclude_keys=[{listed}]"
            )

    def _runs_to_launch(self, batch, first: int) -> list[tuple[int, list]]:
        """(first job number, jobs) for each run of consecutive jobs that are not finished."""
        runs: list[tuple[int, list]] = []
        for number, job in enumerate(batch, first):
            if self._finished(number, job):
                continue
            if runs and runs[-1][0] + len(runs[-1][1]) == number:
                runs[-1][1].append(job)
            else:
                runs.append((number, [job]))
        return runs

    def _finished(self, number: int, job: list[str]) -> bool:
        """Whether job `number`'s folder holds a finished run (RunFolder.is_finished)."""
        if not self._may_hold_finished:
            return False
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = number
        folder = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        return RunFolder(folder).is_finished()
