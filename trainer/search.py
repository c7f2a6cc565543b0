"""The hyperparameter search of one iteration: hyperopt TPE over Lightning fine-tuning runs.

hyperopt minimises, and every metric here is "higher is better", so trials report
``loss = -quality``.
"""

import copy
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning
import torch
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, tpe
from hyperopt.exceptions import AllTrialsFailed
from hyperopt.fmin import generate_trials_to_calculate
from sentence_transformers import SentenceTransformer

from producer.settings import Settings
from trainer.evaluation import MAIN_METRIC, evaluate
from trainer.fine_tuner import (
    EmbeddingsFineTuner,
    ItemsSets,
    QueryRetriever,
    Tokens,
    encode_texts,
)
from trainer.params import FineTuningParams, warm_start
from trainer.ranking_data import RankingData
from trainer.stages import StageClock, StageTimer
from trainer.token_cache import TokenCache
from trainer.tracker import ExperimentsTracker

log = logging.getLogger(__name__)


class Canceled(Exception):
    """The task was canceled; the search stops at the next trial boundary."""


class Interrupted(Exception):
    """The worker is shutting down; the search stops at the next trial boundary and the task
    stays ``processing``, to be resumed (finished runs are reused)."""


@dataclass
class SearchContext:
    """What a search needs besides its inputs: the device, hooks, and its outcome."""

    device: str
    baseline: dict[str, float] = field(default_factory=dict)
    is_canceled: Callable[[], bool] = lambda: False
    is_interrupted: Callable[[], bool] = lambda: False
    on_trial: Callable[[FineTuningParams, float | None, float], None] | None = None
    initial_model_path: str = ""
    trials_run: int = 0
    trials_failed: int = 0
    #: Wall time per stage of the task (``trainer.stages``); trial n's are ``trial_<n>_*``.
    stages: StageClock = field(default_factory=StageClock)
    #: More Lightning callbacks for every trial's Trainer (profilers, benchmarks).
    callbacks: list[lightning.Callback] = field(default_factory=list)
    #: Token ids of the task's texts, tokenised once for all trials (see ``prepare``).
    token_cache: TokenCache | None = None
    #: The initial model, loaded once per task: each trial trains a copy of it.
    _models: dict[str, SentenceTransformer] = field(default_factory=dict)

    def initial_model(self, path: str, settings: Settings) -> SentenceTransformer:
        """The model at ``path``, read from disk on first use; callers must not train it."""
        if path not in self._models:
            with self.stages.time("load_model"):
                model = SentenceTransformer(path, device=self.device)
                model.max_seq_length = settings.max_seq_length
                self._models[path] = model
        return self._models[path]

    def trial_model(self, path: str, settings: Settings) -> SentenceTransformer:
        """A fresh copy of the initial model for one trial (its tokenizer is shared: it is
        never changed), instead of reading the model from disk again."""
        template = self.initial_model(path, settings)
        return copy.deepcopy(template, {id(template.tokenizer): template.tokenizer})


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def lightning_device(device: str) -> dict[str, Any]:
    """Lightning Trainer arguments for ``device`` ("cpu", "cuda", "cuda:N"): that very GPU,
    with bf16 autocast where the GPU has it (Ampere and later); fp32 elsewhere."""
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        bf16 = torch.cuda.is_bf16_supported()
        return {
            "accelerator": "gpu",
            "devices": [index],
            "precision": "bf16-mixed" if bf16 else "32-true",
        }
    return {"accelerator": "cpu", "devices": 1, "precision": "32-true"}


def prepare(
    ctx: SearchContext,
    model_path: str,
    settings: Settings,
    data: RankingData,
    query_retriever: QueryRetriever,
) -> TokenCache:
    """Tokenise every query and item text of the task once (``build_data``): trials, epochs
    and evaluations slice their batches from this cache."""
    if ctx.token_cache is None:
        model = ctx.initial_model(model_path, settings)
        with ctx.stages.time("build_data"):
            queries = {query_retriever(s.query) for s in (*data.train, *data.test)}
            ctx.token_cache = TokenCache(model, [*data.items.values(), *sorted(queries)])
    return ctx.token_cache


def items_sets(data: RankingData, params: FineTuningParams) -> ItemsSets:
    return ItemsSets(
        train=data.pairs(
            data.train,
            skip_above_weight=params.skip_above_weight,
            max_negatives=params.hard_negatives,
        ),
        test=data.pairs(
            data.test,
            skip_above_weight=params.skip_above_weight,
            max_negatives=params.hard_negatives,
        ),
        test_sessions=data.test,
        items=data.items,
    )


def _finetune_embedding_model_one_step(
    initial_model_path: str,
    settings: Settings,
    ranking_data: RankingData,
    query_retriever: QueryRetriever,
    fine_tuning_params: FineTuningParams,
    tracker: ExperimentsTracker,
    context: SearchContext | None = None,
) -> float:
    """Fine-tune a copy of the initial model with ``fine_tuning_params``, evaluate on the
    held-out sessions, keep it in MLflow if it is the best so far; return the quality (the
    main metric). Stages: ``trial_<n>_setup``, ``_train``, ``_eval``, ``_log_model``."""
    ctx = context or SearchContext(device=resolve_device(settings.device))
    cache = prepare(ctx, initial_model_path, settings, ranking_data, query_retriever)
    stage = f"trial_{ctx.trials_run}_"
    with ctx.stages.time(f"{stage}setup"):
        # The same parameters give the same run: a retried task reproduces its results.
        lightning.seed_everything(int(fine_tuning_params.digest()[:8], 16), verbose=False)
        model = ctx.trial_model(initial_model_path, settings)
        module = EmbeddingsFineTuner.create(
            model,
            settings,
            items_sets(ranking_data, fine_tuning_params),
            query_retriever,
            fine_tuning_params,
            tracker,
            token_cache=cache,
        )
        cuda = ctx.device.startswith("cuda")
        trainer = lightning.Trainer(
            max_epochs=settings.epochs,
            # The run's quality is its last epoch's; earlier evaluations only draw a curve.
            check_val_every_n_epoch=1 if settings.eval_every_epoch else settings.epochs,
            **lightning_device(ctx.device),
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
            callbacks=[StageTimer(ctx.stages, stage), *ctx.callbacks],
        )
    try:
        trainer.fit(module)
        quality = module.quality
        run_id = tracker._run_id
        if run_id is not None and math.isfinite(quality):
            with ctx.stages.time(f"{stage}log_model"):
                tracker.keep_if_best(run_id, quality, fine_tuning_params, model)
        return quality
    finally:
        del trainer, module, model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def _finetune_embedding_model_one_step_hyperopt(
    initial_model_path: str,
    settings: Settings,
    ranking_data: RankingData,
    query_retriever: QueryRetriever,
    hyperopt_params: dict[str, Any],
    tracker: ExperimentsTracker,
    context: SearchContext | None = None,
) -> dict[str, Any]:
    """The hyperopt objective: one run, never raising. A failing trial is logged to MLflow
    with its error and reported to hyperopt as failed."""
    ctx = context or SearchContext(device=resolve_device(settings.device))
    if ctx.is_canceled():
        raise Canceled
    if ctx.is_interrupted():
        raise Interrupted
    try:
        params = FineTuningParams(**{**FineTuningParams().model_dump(), **hyperopt_params})
    except ValueError as exc:  # a grid value out of range: nothing to train or log
        log.warning("trial with %s refused: %s", hyperopt_params, exc)
        ctx.trials_failed += 1
        return {"status": STATUS_FAIL, "error": str(exc)}
    with ctx.stages.time("mlflow"):
        done = tracker.finished_quality(params)
    if done is not None:  # a retried task: this run already finished
        log.info("run %s already finished: quality %.4f", params.digest(), done)
        return {"loss": -done, "status": STATUS_OK, "quality": done}
    started = time.perf_counter()
    ctx.trials_run += 1
    n = ctx.trials_run
    with ctx.stages.time(f"trial_{n}_mlflow"):
        tracker.start_run(params, ctx.baseline)
    try:
        quality = _finetune_embedding_model_one_step(
            initial_model_path, settings, ranking_data, query_retriever, params, tracker, ctx
        )
        if not math.isfinite(quality):
            raise ValueError(f"quality is {quality}")
    except Exception as exc:
        log.warning("trial %s failed: %s", params.digest(), exc)
        with ctx.stages.time(f"trial_{n}_mlflow"):
            tracker.end_run(
                None, error=f"{type(exc).__name__}: {exc}", stages=ctx.stages.of_trial(n)
            )
        ctx.trials_failed += 1
        if ctx.on_trial:
            ctx.on_trial(params, None, time.perf_counter() - started)
        return {"status": STATUS_FAIL, "error": str(exc)}
    with ctx.stages.time(f"trial_{n}_mlflow"):
        tracker.end_run(quality, stages=ctx.stages.of_trial(n))
    if ctx.on_trial:
        ctx.on_trial(params, quality, time.perf_counter() - started)
    return {"loss": -quality, "status": STATUS_OK, "quality": quality}


def _space(grid: dict[str, list[Any]]) -> dict[str, Any]:
    return {name: hp.choice(name, values) for name, values in grid.items()}


def finetune_embedding_model(
    iteration: str,
    settings: Settings,
    ranking_data: RankingData,
    query_retriever: QueryRetriever,
    tracker: ExperimentsTracker,
    initial_params: dict[str, list[Any]],
    initial_max_evals: int = 100,
    context: SearchContext | None = None,
    initial_model_path: str | None = None,
) -> float:
    """Run one iteration's search; return the best run's quality (NaN if none finished).

    First iteration of a method: TPE over ``initial_params`` for ``initial_max_evals``
    trials, the first of them the default parameters (:func:`trainer.params.warm_start`).
    Later iterations: the previous iteration's top-N parameter sets, then a smaller TPE
    search over the values those sets use.
    """
    ctx = context or SearchContext(device=resolve_device(settings.device))
    with ctx.stages.time("mlflow"):
        tracker.start_iteration()
    model_path = initial_model_path or ctx.initial_model_path
    prepare(ctx, model_path, settings, ranking_data, query_retriever)
    if not ctx.baseline:
        ctx.baseline = baseline_metrics(
            model_path, settings, ranking_data, query_retriever, ctx.device, context=ctx
        )
    log.info(
        "iteration %s: baseline %s=%.4f",
        iteration,
        MAIN_METRIC,
        ctx.baseline.get(MAIN_METRIC, float("nan")),
    )

    def objective(hyperopt_params: dict[str, Any]) -> dict[str, Any]:
        return _finetune_embedding_model_one_step_hyperopt(
            model_path, settings, ranking_data, query_retriever, hyperopt_params, tracker, ctx
        )

    with ctx.stages.time("mlflow"):
        top = tracker.previous_top_params(settings.top_n_params)
    if not top:
        grid, evals = initial_params, initial_max_evals
        warm = True
    else:
        for params in top:
            objective({k: v for k, v in params.model_dump().items() if k in initial_params})
        grid = {name: sorted({getattr(p, name) for p in top}, key=str) for name in initial_params}
        evals = max(1, initial_max_evals // 4)
        warm = False
    try:
        run_search(objective, grid, evals, _rng(iteration), warm=warm)
    except AllTrialsFailed:
        log.warning("iteration %s: all %d trials failed", iteration, ctx.trials_failed)
    return tracker.best.quality if tracker.best else float("nan")


def run_search(
    objective: Callable[[dict[str, Any]], Any],
    grid: dict[str, list[Any]],
    evals: int,
    rstate: Any,
    *,
    warm: bool = True,
) -> None:
    """``evals`` trials of TPE over ``grid``; with ``warm``, the first of them is the default
    parameters (:func:`trainer.params.warm_start`) when the grid holds them."""
    first = warm_start(grid) if warm else []
    if first and evals <= 1:
        objective({name: grid[name][index] for name, index in first[0].items()})
        return
    fmin(
        objective,
        _space(grid),
        algo=tpe.suggest,
        # hyperopt reads points_to_evaluate only when it makes the Trials itself, and then
        # counts max_evals beyond the points given: the first point goes in as a trial
        # already asked for, and the budget stays ``evals`` in all.
        max_evals=evals - len(first),
        trials=generate_trials_to_calculate(first) if first else Trials(),
        rstate=rstate,
        show_progressbar=False,
    )


def _rng(iteration: str) -> Any:
    import hashlib

    import numpy as np

    # The same iteration proposes the same trials, so a retried task resumes its runs.
    seed = int.from_bytes(hashlib.blake2b(iteration.encode(), digest_size=4).digest(), "big")
    return np.random.default_rng(seed)


@torch.no_grad()
def baseline_metrics(
    model_path: str,
    settings: Settings,
    data: RankingData,
    query_retriever: QueryRetriever,
    device: str,
    context: SearchContext | None = None,
) -> dict[str, float]:
    """The initial model's held-out metrics (stage ``baseline``); with a context, from the
    model and the token cache the trials use."""
    ctx = context or SearchContext(device=device)
    model = ctx.initial_model(model_path, settings)
    tokens = Tokens(model, ctx.token_cache)
    with ctx.stages.time("baseline"):

        def encode(texts: Any) -> torch.Tensor:
            return encode_texts(model, list(texts), tokens)

        def encode_queries(texts: Any) -> torch.Tensor:
            return encode([query_retriever(t) for t in texts])

        return evaluate(
            encode,
            EmbeddingsFineTuner.preprocess_inputs(data.test),
            data.items,
            encode_queries=encode_queries,
        )
