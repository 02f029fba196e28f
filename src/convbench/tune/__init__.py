"""Hyperparameter search: `convbench tune`, a study of ordinary runs on Optuna.

- space: the search space of a `tune` config (conf/tune/) checked and turned into Optuna's
  distributions, before any trial starts.
- study: the study folder (its record, study.yaml, and its trials' run folders) and the study in
  its storage (SQLite in the folder by default, any URL Optuna accepts).
- trials: the workers: each asks the study for a trial, trains it as a `convbench train` run in
  the study folder, and tells the study how it ended (complete, pruned, failed).

A trial reports each epoch's validation metric to the study from inside its run
(convbench.run.pruning), so the pruner can stop it. Optuna is an optional dependency (the `tune`
extra): it is imported only here and by the run that reports to a study.
"""
