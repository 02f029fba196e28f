"""A study's trial, seen from inside its run: after each epoch the validation metric goes to the
study (the trial's intermediate value at that epoch), and the pruner decides whether the trial
goes on. When it says stop, the run ends with `TrialPruned` and its status is "pruned".

A run is a trial when its config says so (`tune.trial`, set by `convbench tune` with the
study's storage URL and name). The pruner is rebuilt here from the same settings as the
study's, so every worker and every trial judges alike. Optuna is imported only by such a run.
"""

from convbench.errors import ConvbenchError, TrialPruned


def flat_params(params, prefix: str = "") -> dict:
    """`tune.params` (nested as the run config is: optimizer: {lr: {type: float, ...}}) as
    {"optimizer.lr": {type: float, ...}}: a distribution is a mapping with a `type`."""
    found = {}
    for key, value in (params or {}).items():
        if isinstance(value, dict) and "type" not in value:
            found |= flat_params(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = value
    return found


def pruner(*, kind: str, startup_trials: int, warmup_epochs: int, epochs: int):
    """Optuna's pruner for `tune.pruner` (median, hyperband, halving, none)."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs
        )
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def open_storage(url: str, *, attempts: int = 5):
    """Optuna's storage at `url`; a `ConvbenchError` when it cannot be opened.

    Workers that start together on a new database race to create its tables: one of them
    finds a table or the version row made by another between checking and creating ("already
    exists", a unique-key clash). That is not a fault of the URL, so it is retried; opening
    again sees the finished tables and creates nothing."""
    import time

    import optuna
    import sqlalchemy.exc

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt + 1 < attempts and _lost_creation_race(exc):
                time.sleep(0.2 * (attempt + 1))
                continue
            reason = exc
        except (ValueError, ImportError) as exc:
            reason = exc
        break
    reason = " ".join(str(reason).split())[:300]
    raise ConvbenchError(
        f"tune.storage={url} cannot be opened ({reason}). Give a URL Optuna accepts: "
        "sqlite:///path/study.db, postgresql://user:password@host/db or "
        "mysql+pymysql://..., with its driver installed; empty stores the study in its "
        "folder."
    )


def _lost_creation_race(exc) -> bool:
    import sqlalchemy.exc

    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in text


class TrialReporter:
    """`after_epoch` of a trial's run (convbench.engine.RunIO)."""

    def __init__(self, tune, *, epochs: int):
        import optuna

        storage = open_storage(tune.storage)
        settings = dict(
            kind=str(tune.pruner),
            startup_trials=tune.startup_trials,
            warmup_epochs=tune.warmup_epochs,
            epochs=epochs,
        )
        study = optuna.load_study(
            study_name=tune.study_name, storage=storage, pruner=pruner(**settings)
        )
        study_id = storage.get_study_id_from_name(tune.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, tune.trial)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.metric = tune.metric

    def __call__(self, epoch: int, val: dict) -> None:
        value = val["acc"] if self.metric == "val_acc" else val["loss"]
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise TrialPruned(epoch, value, self.metric)


def trial_reporter(cfg) -> TrialReporter | None:
    """The reporter of a trial's run; None for any other run."""
    tune = cfg.get("tune")
    if tune is None or tune.trial is None:
        return None
    return TrialReporter(tune, epochs=cfg.trainer.epochs)
