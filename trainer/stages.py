"""Wall time of a task's stages: where a task's minutes go, and how much of it is training.

A task records ``read_batch``, ``build_data``, ``load_model``, ``baseline``, then per trial
``trial_<n>_setup``, ``trial_<n>_train``, ``trial_<n>_eval``, ``trial_<n>_mlflow``,
``trial_<n>_log_model``, and at the end ``register`` and ``fetch_model`` (see
``docs/trainer.md``). The numbers go to MLflow (each trial's run, and the iteration's
experiment as a tag) and, summed by kind, into the task's final status detail.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning

#: Summary groups of the status detail: a stage counts toward the first group it starts with
#: (after the ``trial_<n>_`` prefix is dropped).
GROUPS = (
    "read_batch",
    "build_data",
    "load_model",
    "baseline",
    "setup",
    "train",
    "eval",
    "mlflow",
    "log_model",
    "register",
    "fetch_model",
)


class StageClock:
    """Seconds per stage, in the order the stages first ran; a repeated stage adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def of_trial(self, n: int) -> dict[str, float]:
        """Trial ``n``'s stages without their prefix: ``{"train": ..., "eval": ...}``."""
        prefix = f"trial_{n}_"
        return {k[len(prefix) :]: v for k, v in self.seconds.items() if k.startswith(prefix)}

    def trials(self) -> list[int]:
        return sorted({int(k.split("_", 2)[1]) for k in self.seconds if k.startswith("trial_")})

    def outside_trials(self) -> dict[str, float]:
        return {k: v for k, v in self.seconds.items() if not k.startswith("trial_")}

    def trials_total(self) -> dict[str, float]:
        """Every trial's stages summed by kind: ``{"train": ..., "eval": ...}``."""
        out: dict[str, float] = {}
        for n in self.trials():
            for kind, seconds in self.of_trial(n).items():
                out[kind] = out.get(kind, 0.0) + seconds
        return out

    def grouped(self) -> dict[str, float]:
        """Seconds by kind of stage over the whole task (all trials' ``train`` together)."""
        out: dict[str, float] = {}
        for stage, seconds in self.seconds.items():
            kind = stage.split("_", 2)[2] if stage.startswith("trial_") else stage
            group = next((g for g in GROUPS if kind.startswith(g)), "other")
            out[group] = out.get(group, 0.0) + seconds
        return out

    def summary(self) -> str:
        """``"12.3 s: train 9.1, eval 1.2, ..."``, largest first, for a status detail."""
        groups = sorted(self.grouped().items(), key=lambda kv: -kv[1])
        total = sum(self.seconds.values())
        return f"{total:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in groups if v >= 0.05)


class StageTimer(lightning.Callback):
    """The training loop and the validation of a Lightning fit, as two stages.

    ``train`` runs from each epoch's start to the start of its validation (or its end):
    fetching and collating batches, forward, backward, optimizer steps; ``eval`` is the
    validation loop (the loss on held-out pairs and the held-out metrics). Lightning runs
    validation inside the training epoch, so the epoch's own end would count it twice. On a
    GPU the clock is read after the queued kernels are done (one sync per epoch).
    """

    def __init__(self, clock: StageClock, prefix: str = "") -> None:
        self.clock = clock
        self.prefix = prefix
        self._epoch_start = 0.0
        self._val_start = 0.0

    def on_train_epoch_start(self, trainer: lightning.Trainer, module: Any) -> None:
        self._epoch_start = _now(module)

    def on_validation_start(self, trainer: lightning.Trainer, module: Any) -> None:
        self._val_start = _now(module)
        self._close_epoch(self._val_start)  # validation inside an epoch: its batches are done

    def on_validation_end(self, trainer: lightning.Trainer, module: Any) -> None:
        self.clock.add(f"{self.prefix}eval", _now(module) - self._val_start)

    def on_train_epoch_end(self, trainer: lightning.Trainer, module: Any) -> None:
        self._close_epoch(_now(module))

    def _close_epoch(self, now: float) -> None:
        if self._epoch_start:
            self.clock.add(f"{self.prefix}train", now - self._epoch_start)
            self._epoch_start = 0.0


def _now(module: Any) -> float:
    device = getattr(module, "device", None)
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter()
