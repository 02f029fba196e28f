"""A study's own pictures, drawn by Optuna with matplotlib for `convbench compare STUDY_DIR`:
the optimisation history, the parameters' importances, the metric against each parameter
(slice) and against the two most important ones together (contour)."""

import contextlib
import warnings
from importlib.util import find_spec
from pathlib import Path

from convbench.tune.study import StudyFolder, is_study_dir, open_study

WIDTH_IN, HEIGHT_IN = 9.0, 4.0  # 900 pixels wide at 100 dpi, as compare's own figure


def study_figures(folder: Path) -> list[tuple[str, object]]:
    """(caption, matplotlib Figure) for each picture the study's trials can give; none where
    `folder` is not a study folder or Optuna is not installed. A picture that needs more than
    the study has (importances need two complete trials whose values differ) is left out."""
    if not is_study_dir(folder):
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")  # Optuna draws through pyplot; no window, ever
        import optuna
        from matplotlib import pyplot
        from optuna.visualization import matplotlib as draw
    except ImportError:
        return []
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study_folder = StudyFolder(folder)
    record = study_folder.read()
    study, _ = open_study(study_folder, record, create=False)
    metric = record.metric
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return []
    figures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        pictures = [
            (
                "optimisation history: each trial's value and the best so far",
                draw.plot_optimization_history,
            ),
            (
                "parameter importances (fANOVA over the complete trials)",
                draw.plot_param_importances,
            ),
            ("the metric against each parameter (slice)", draw.plot_slice),
        ]
        important = _most_important(study, optuna)
        if len(important) == 2 and find_spec("scipy"):  # Optuna interpolates it with scipy
            pictures.append(
                (
                    f"the metric over {important[0]} and {important[1]} (contour)",
                    lambda s: draw.plot_contour(s, params=important),
                )
            )
        for caption, plot in pictures:
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # not enough trials, or values that do not differ, for this picture
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.set_size_inches(WIDTH_IN, HEIGHT_IN)
            for each in figure.axes:  # Optuna's word for the value is the study's metric here
                if each.get_ylabel() == "Objective Value":
                    each.set_ylabel(metric)
                if each.get_xlabel() == "Objective Value":
                    each.set_xlabel(metric)
            with contextlib.suppress(ValueError, ZeroDivisionError):
                figure.tight_layout()  # long parameter names inside the picture
            figures.append((caption, figure))
            pyplot.close(figure)  # drawn on its own canvas from here; pyplot forgets it
    return figures


def _most_important(study, optuna) -> list[str]:
    """The names of the two most important parameters, or fewer where they cannot be told."""
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return []
    return list(importances)[:2]
