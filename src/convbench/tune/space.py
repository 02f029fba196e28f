"""The search space of a study: `tune.params` of the composed config, each key of the run config
with a distribution, checked before any trial starts and turned into Optuna's distributions.
The keys nest as in the run config, so that one bound can be changed on the command line
(`tune.params.optimizer.lr.low=1e-4`) and a key added (`+tune.params.trainer.batch_size=...`):

    optimizer:
      lr: {type: float, low: 1.0e-3, high: 0.5, log: true}
      momentum: {type: float, low: 0.0, high: 0.99, step: 0.01}
    trainer:
      batch_size: {type: int, low: 32, high: 256, step: 32}
    model:
      activation: {type: categorical, choices: [relu, tanh]}
"""

import math
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from convbench.errors import ConvbenchError
from convbench.run.pruning import flat_params

KINDS = ("float", "int", "categorical")
FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
METRICS = ("val_acc", "val_loss")  # what a trial reports each epoch; never the test set


def read_space(cfg: DictConfig) -> dict[str, dict]:
    """`tune.params` as plain dicts, each checked (`check_param`) against the composed run
    config `cfg`; a `ConvbenchError` names the first mistake."""
    nested = OmegaConf.to_container(cfg.tune.params, resolve=True) if cfg.tune else {}
    params = flat_params(nested)
    if not params:
        raise ConvbenchError(
            "tune.params is empty: a study needs at least one key to search, e.g. "
            "tune.params={optimizer.lr: {type: float, low: 1e-3, high: 0.5, log: true}} in a "
            "file of conf/tune/ (see conf/tune/lenet_sgd.yaml)."
        )
    for key, spec in params.items():
        check_param(cfg, key, spec)
    if cfg.tune.metric not in METRICS:
        raise ConvbenchError(
            f"tune.metric={cfg.tune.metric} is not a metric a trial reports each epoch: choose "
            f"{' or '.join(METRICS)} (the test set never chooses: its accuracy would be an "
            "optimistic estimate)."
        )
    return params


def check_param(cfg: DictConfig, key: str, spec) -> None:
    """One key of the space: a key of the run config, with a distribution that can be drawn."""
    where = f"tune.params.{key}"
    if key.startswith("tune."):
        raise ConvbenchError(f"{where}: the study's own settings are not searched.")
    if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
        raise ConvbenchError(
            f"{where}: {key} is not a key of the run config. Search keys that `convbench train "
            "--cfg job` prints (with the same model, dataset and optimizer), e.g. optimizer.lr."
        )
    if isinstance(OmegaConf.select(cfg, key), DictConfig):
        raise ConvbenchError(
            f"{where}: {key} is a group of keys; search one of its values (e.g. {key}.<name>), "
            "or a config option with {type: categorical} on a key of its own."
        )
    if not isinstance(spec, Mapping) or spec.get("type") not in KINDS:
        raise ConvbenchError(
            f"{where} must be a mapping with type: float, int or categorical, e.g. "
            "{type: float, low: 1e-3, high: 0.5, log: true}; got "
            f"{spec!r}."
        )
    kind = spec["type"]
    unknown = sorted(set(spec) - FIELDS[kind])
    if unknown:
        raise ConvbenchError(
            f"{where}: {', '.join(unknown)} is not a field of a {kind} distribution; it takes "
            f"{', '.join(sorted(FIELDS[kind] - {'type'}))}."
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise ConvbenchError(
                f"{where}: a categorical needs a list of at least two choices "
                f"(got {choices!r}); a single value is not a search: set {key}={_one(choices)} "
                "as an override instead."
            )
        if len({repr(c) for c in choices}) < len(choices):
            raise ConvbenchError(f"{where}: the choices {choices} repeat a value.")
        return
    _check_range(where, kind, spec)


def _check_range(where: str, kind: str, spec: Mapping) -> None:
    low, high = spec.get("low"), spec.get("high")
    numbers = (int,) if kind == "int" else (int, float)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, numbers) or not math.isfinite(value):
            raise ConvbenchError(
                f"{where}: {name} must be a finite {'integer' if kind == 'int' else 'number'}, "
                f"got {value!r}."
            )
    if low > high:
        raise ConvbenchError(f"{where}: low={low} is above high={high}; swap them.")
    if low == high:
        raise ConvbenchError(
            f"{where}: the range [{low}, {high}] is empty (low = high); widen it, or set the "
            "value as an override instead of searching it."
        )
    log, step = bool(spec.get("log", False)), spec.get("step")
    if log and low <= 0:
        raise ConvbenchError(
            f"{where}: a log range must lie above zero, but low={low}; give a positive low "
            "(e.g. 1e-6), or drop log: true."
        )
    if step is not None:
        if log:
            raise ConvbenchError(f"{where}: give either log: true or a step, not both.")
        if isinstance(step, bool) or not isinstance(step, numbers) or not step > 0:
            raise ConvbenchError(f"{where}: step must be a positive number, got {step!r}.")
        if step > high - low:
            raise ConvbenchError(
                f"{where}: step={step} is wider than the range [{low}, {high}]: only one value "
                "could be drawn."
            )


def distributions(params: dict[str, dict]) -> dict:
    """Optuna's distribution for each key of a checked space."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found = {}
    for key, spec in params.items():
        if spec["type"] == "categorical":
            found[key] = CategoricalDistribution(spec["choices"])
        elif spec["type"] == "int":
            found[key] = IntDistribution(
                spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step") or 1
            )
        else:
            found[key] = FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=spec.get("log", False),
                step=spec.get("step"),
            )
    return found


def grid(params: dict[str, dict]) -> dict[str, list]:
    """Every value of each key, for the grid sampler: the choices, or low to high by step."""
    values = {}
    for key, spec in params.items():
        if spec["type"] == "categorical":
            values[key] = list(spec["choices"])
        elif spec.get("step") is None:
            raise ConvbenchError(
                f"tune.sampler=grid needs a finite list of values for every key, but "
                f"tune.params.{key} is a continuous {spec['type']} range: give it a step, or "
                "make it a categorical."
            )
        else:
            count = round((spec["high"] - spec["low"]) / spec["step"]) + 1
            values[key] = [spec["low"] + i * spec["step"] for i in range(count)]
            if spec["type"] == "int":
                values[key] = [int(v) for v in values[key]]
    return values


def as_override(key: str, value) -> str:
    """KEY=VALUE as Hydra parses it back to the same value (floats in full, strings quoted
    when they would parse as something else)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    if isinstance(value, str):
        return f"{key}={value}" if value.replace("_", "").isalnum() else f"{key}='{value}'"
    return f"{key}={value}"


def _one(choices) -> str:
    return str(choices[0]) if isinstance(choices, list) and choices else "VALUE"


_MISSING = object()


def own_values(cfg: DictConfig, params: dict[str, dict]) -> dict:
    """The composed config's own values of the searched keys, where every one lies in its
    distribution (a float or int within [low, high] and on its step, a categorical among its
    choices); {} where one does not, since Optuna cannot ask for a point outside its space."""
    values = {}
    for key, spec in params.items():
        value = OmegaConf.select(cfg, key)
        if spec["type"] == "categorical":
            if value not in spec["choices"]:
                return {}
        else:
            kind = int if spec["type"] == "int" else float
            if isinstance(value, bool) or not isinstance(value, int | float):
                return {}
            if not spec["low"] <= value <= spec["high"]:
                return {}
            step = spec.get("step")
            if (
                step
                and abs((value - spec["low"]) / step - round((value - spec["low"]) / step)) > 1e-9
            ):
                return {}
            value = kind(value)
        values[key] = value
    return values
