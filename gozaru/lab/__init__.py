"""The lab room: training runs, measurements, experiments over conditions, plots, the demo and the CLI.

``progress``, ``record``, ``schedule``, ``executor`` → ``generate`` → ``study.measures`` → ``evaluate`` → ``train`` →
``source`` → ``task`` → ``experiment_data`` → ``experiment`` → ``plots`` → ``demo`` → ``study`` (its own room: spec,
design, inputs, runs, runner, stats, report, demo), ``hub``, ``cli_args`` → ``cli``.
"""
from .evaluate import EvalConfig
from .experiment import Condition, ExperimentData, seed_grid
from .record import RunRecord
from .train import DivergedError, NonFiniteError, TrainConfig, Trainer

__all__ = ["Condition", "DivergedError", "EvalConfig", "ExperimentData", "NonFiniteError", "RunRecord", "TrainConfig",
           "Trainer", "seed_grid"]
