"""Training throughput: one clicktune trial against sentence-transformers' own trainer.

    python bench/train_throughput.py                        # 512 rows, batch 32, 4 rounds
    python bench/train_throughput.py --rows 2048 --repeat 6
    python bench/train_throughput.py --device cuda          # on a GPU (bf16 autocast)
    python bench/train_throughput.py --shape pairs --batch-size 16   # the default recipe's rows

The same rows go to both sides: simulated clicks on the generated catalog
(``producer/sample_catalog.py``, the demo's traffic) turned into clicktune's training pairs
by ``trainer.ranking_data``; each row is (query, clicked item, one skipped item of the same
session). **An example is one such row: one (query, positive) pair with its hard negative**;
rates are rows per second, and both sides see every row once per epoch. ``--shape pairs``
measures the default recipe's rows instead: (query, clicked item), no hard negative, a 10%
warm-up and linear decay on both sides.
  (a) clicktune: ``trainer.search._finetune_embedding_model_one_step``, the real trial
      (Lightning loop, ``EmbeddingsFineTuner``, the in-batch contrastive loss), with the
      task's one-off preparation (``trainer.search.prepare``: tokenising the task's texts)
      done first, as ``finetune_embedding_model`` does;
  (b) library: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` on the
      (anchor, positive, negative) columns, default batch sampler and optimizer, no
      evaluation or saving.
The window is each epoch's start to its last optimizer step: fetching and collating
(tokenising) batches, forward, backward, step; both sides time it with a callback (wall time
and this process's CPU time, all threads). Model loading, clicktune's per-epoch evaluation
and the library's start-up are outside it; clicktune's tokenisation once per task is outside
it too and reported on its own (and charged in full to one trial in a second rate). Same
model, batch size, sequence length, learning rate, weight decay, epochs (1), device and
precision (fp32 on CPU, bf16 autocast on CUDA where supported).

Both sides run in one process, alternating (a, b, b, a, ...), so that other work on a shared
machine hits both alike; the ratio is the median of the rounds' ratios. Peak memory (RSS on
CPU, ``torch.cuda.max_memory_allocated`` on CUDA) is measured for each side alone, in a fresh
process. Writes bench/results/train_throughput.json.

Sessions' queries are made distinct per session by default (``--head-queries`` keeps the
catalog's 31 query phrasings, where a batch repeats queries and clicktune encodes each
distinct text once per step): with distinct queries every row costs both sides about three
texts.
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producer.sample_catalog import build_catalog  # noqa: E402
from producer.simulator import ClickSimulator  # noqa: E402
from schemas.clickstream import ClickEvent, IrrelevantEvent, SearchEvent  # noqa: E402
from trainer.model_source import base_model_path, offline  # noqa: E402
from trainer.params import FineTuningParams  # noqa: E402
from trainer.ranking_data import RankingData, Session, split_by_query  # noqa: E402

# Triplets (a skipped result as the hard negative of each click) on both sides, at the
# command line's batch size: the heavier of clicktune's row shapes, and one the library's
# MNRL takes as is.
TRIPLETS = FineTuningParams(
    loss="contrastive",
    frozen_layers=0,
    learning_rate=2e-5,
    hard_negatives=4,
    batch_size=None,
    schedule="step",
)
# The default recipe's rows (trainer/params.py): (query, clicked item) pairs, no hard
# negative, linear decay after a warm-up, gradients clipped; the batch size from the
# command line on both sides.
PAIRS = FineTuningParams(batch_size=None)
SHAPES = {"triplets": TRIPLETS, "pairs": PAIRS}


def _lexical_ranker(catalog: dict[str, str]) -> Any:
    # The search engine being observed only decides which items are shown: a word-overlap
    # ranker keeps the bench free of a model pass over the catalog.
    words = {i: set(t.lower().replace(",", " ").split()) for i, t in catalog.items()}
    ids = sorted(catalog)

    def rank(query: str) -> list[str]:
        q = set(query.lower().split())
        return sorted(ids, key=lambda i: (-len(q & words[i]), i))[:20]

    return rank


def ranking_data(
    rows: int, params: FineTuningParams, *, distinct_queries: bool, seed: int = 7
) -> RankingData:
    """Simulated sessions until the training split yields ``rows`` pairs (then cut there).
    Irrelevant sessions are left out: their rows have no positive, which MNRL cannot take."""
    catalog, judgments = build_catalog()
    sim = ClickSimulator(catalog, judgments, _lexical_ranker(catalog), seed=seed)
    sessions: list[Session] = []
    data = RankingData("bench", [], [], catalog)
    n = 0
    for events in sim.sessions(10**9):
        n += 1
        search = next(e for e in events if isinstance(e, SearchEvent))
        if any(isinstance(e, IrrelevantEvent) for e in events):
            continue
        clicked = frozenset(e.item_id for e in events if isinstance(e, ClickEvent))
        if not clicked:
            continue
        query = f"{search.query} {n}" if distinct_queries else search.query
        shown = tuple((r["item_id"], r.get("rank") or k) for k, r in enumerate(search.results, 1))
        sessions.append(Session(f"s{n}", query, shown, clicked))
        if n % 50 == 0:
            train, test = split_by_query("bench", sessions, 0.2)
            data = RankingData("bench", train, test, catalog)
            pairs = data.pairs(
                train,
                skip_above_weight=params.skip_above_weight,
                max_negatives=params.hard_negatives,
            )
            if len(pairs) >= rows:
                break
    # Keep whole sessions until ``rows`` pairs: both sides see exactly these rows.
    kept: list[Session] = []
    count = 0
    for s in data.train:
        if count >= rows:
            break
        kept.append(s)
        count += len(
            data.pairs(
                [s],
                skip_above_weight=params.skip_above_weight,
                max_negatives=params.hard_negatives,
            )
        )
    return RankingData("bench", kept, data.test, catalog)


def _settings(args: argparse.Namespace) -> Any:
    from producer.settings import Settings

    return Settings.load(
        device=args.device,
        train_batch_size=args.batch_size,
        max_seq_length=args.seq_len,
        epochs=1,
    )


def _peak_memory_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Window:
    """Wall and CPU seconds from the epoch's start to the end of its last step, and the
    steps. On CUDA the clock is read after the queued kernels are done."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.wall = self.cpu = 0.0
        self.steps = 0
        self._start: tuple[float, float] | None = None

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def begin(self) -> None:
        self._sync()
        self._start = (time.perf_counter(), time.process_time())

    def step(self) -> None:
        self.steps += 1

    def end(self) -> None:
        if self._start is None:
            return
        self._sync()
        self.wall = time.perf_counter() - self._start[0]
        self.cpu = time.process_time() - self._start[1]
        self._start = None


class _NoTracker:
    """MLflow is outside the measured window; a trial without a run logs nothing."""

    _run_id = None

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        pass


def _ours(args: argparse.Namespace, data: RankingData, ctx: Any = None) -> dict[str, Any]:
    import lightning

    from trainer import search
    from trainer.fine_tuner import identity_query

    window = Window(args.device)

    class Timer(lightning.Callback):
        def on_train_epoch_start(self, *a: Any) -> None:
            window.begin()

        def on_train_batch_end(self, *a: Any) -> None:
            window.step()

        def on_validation_start(self, *a: Any) -> None:  # the epoch's last step is done
            window.end()

        def on_train_epoch_end(self, *a: Any) -> None:
            window.end()

    params = SHAPES[args.shape]
    settings = _settings(args)
    path = base_model_path(settings.base_model)
    if ctx is None:
        ctx = search.SearchContext(device=args.device)
        if hasattr(search, "prepare"):  # once per task, as finetune_embedding_model does
            search.prepare(ctx, path, settings, data, identity_query)
    ctx.callbacks = [Timer()]
    rows = len(search.items_sets(data, params).train)
    started = time.perf_counter()
    quality = search._finetune_embedding_model_one_step(
        path,
        settings,
        data,
        identity_query,
        params,
        _NoTracker(),  # type: ignore[arg-type]
        ctx,
    )
    return {
        "rows": rows,
        "train_s": window.wall,
        "train_cpu_s": window.cpu,
        "steps": window.steps,
        "trial_s": time.perf_counter() - started,
        "stages": ctx.stages.seconds,
        "quality": quality,
    }


def _library(args: argparse.Namespace, data: RankingData) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from trainer.search import items_sets

    params = SHAPES[args.shape]
    pairs = items_sets(data, params).train
    columns = {
        "anchor": [p.query for p in pairs],
        "positive": [data.items[p.positive] for p in pairs],
    }
    if args.shape == "triplets":
        assert all(p.positive and p.negative for p in pairs)
        columns["negative"] = [data.items[p.negative] for p in pairs]
    else:
        assert all(p.positive and not p.negative for p in pairs)
    dataset = Dataset.from_dict(columns)
    cuda = args.device.startswith("cuda")
    model = SentenceTransformer(base_model_path("all-MiniLM-L6-v2"), device=args.device)
    model.max_seq_length = args.seq_len

    window = Window(args.device)

    class Timer(TrainerCallback):
        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            window.begin()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            window.step()

        def on_epoch_end(self, *a: Any, **k: Any) -> None:
            window.end()

    with tempfile.TemporaryDirectory() as out:
        targs = SentenceTransformerTrainingArguments(
            output_dir=out,
            num_train_epochs=1,
            per_device_train_batch_size=args.batch_size,
            learning_rate=params.learning_rate,
            weight_decay=params.weight_decay,
            # The same warm-up as ours where the recipe has one (the library's default: none);
            # both clip to norm 1 (the library's default max_grad_norm).
            # (transformers 5 reads a float below 1 as the ratio of the run's steps)
            warmup_steps=params.warmup_ratio if params.schedule == "linear" else 0,
            bf16=cuda and torch.cuda.is_bf16_supported(),
            use_cpu=not cuda,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            logging_strategy="no",
            disable_tqdm=True,
            seed=int(params.digest()[:8], 16),
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=targs,
            train_dataset=dataset,
            loss=MultipleNegativesRankingLoss(model),
            callbacks=[Timer()],
        )
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    return {
        "rows": len(pairs),
        "train_s": window.wall,
        "train_cpu_s": window.cpu,
        "steps": window.steps,
        "trial_s": total,
    }


def _rates(args: argparse.Namespace, data: RankingData) -> dict[str, Any]:
    """Both sides in this one process, alternating: each (a, b) pair of windows is measured
    within seconds, so other work on a shared machine hits both alike."""
    import gc

    from trainer import search
    from trainer.fine_tuner import identity_query

    ctx = search.SearchContext(device=args.device)
    if hasattr(search, "prepare"):  # once per task, as finetune_embedding_model does
        search.prepare(
            ctx, base_model_path("all-MiniLM-L6-v2"), _settings(args), data, identity_query
        )
    # Tokenising the task's texts: what the per-step tokenisation moved out of the loop.
    prepared_s = ctx.stages.seconds.get("build_data", 0.0)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "library": []}
    for i in range(args.repeat):
        for side in ("ours", "library") if i % 2 == 0 else ("library", "ours"):
            r = _ours(args, data, ctx) if side == "ours" else _library(args, data)
            r["rows_per_s"] = r["rows"] / r["train_s"]
            r["cpu_ms_per_row"] = 1000 * r["train_cpu_s"] / r["rows"]
            runs[side].append(r)
            gc.collect()
            print(
                f"  round {i + 1} {side}: {r['rows_per_s']:.1f} rows/s, "
                f"{r['cpu_ms_per_row']:.0f} CPU ms/row",
                file=sys.stderr,
                flush=True,
            )
    return {"runs": runs, "prepare_s": prepared_s, "stages": ctx.stages.seconds}


def _child(args: argparse.Namespace) -> None:
    offline()
    import torch

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    data = ranking_data(args.rows, SHAPES[args.shape], distinct_queries=not args.head_queries)
    if args.child == "rates":
        result = _rates(args, data)
    else:
        result = _ours(args, data) if args.child == "ours" else _library(args, data)
        result["rows_per_s"] = result["rows"] / result["train_s"]
    result.update(peak_mib=_peak_memory_mib(args.device), torch_threads=torch.get_num_threads())
    print(json.dumps(result))


def _run_child(side: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--rows",
        str(args.rows),
        "--batch-size",
        str(args.batch_size),
        "--seq-len",
        str(args.seq_len),
        "--device",
        args.device,
        "--repeat",
        str(args.repeat),
        "--shape",
        args.shape,
    ]
    if args.head_queries:
        cmd.append("--head-queries")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="training rows (examples)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64, help="max tokens per text")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--repeat", type=int, default=4, help="rounds of (a) and (b)")
    parser.add_argument("--head-queries", action="store_true", help="keep repeated queries")
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="triplets",
        help="rows: triplets (query, click, skipped result) or pairs (the default recipe's)",
    )
    parser.add_argument("--child", choices=("rates", "ours", "library"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = _device(args.device)
    if args.child:
        _child(args)
        return

    rates = _run_child("rates", args)
    runs = rates["runs"]
    # Peak memory of each side alone, in a fresh process (one window each).
    memory = {side: _run_child(side, args)["peak_mib"] for side in ("ours", "library")}
    med = {
        side: {
            k: statistics.median(r[k] for r in runs[side])
            for k in ("rows_per_s", "cpu_ms_per_row", "train_s")
        }
        for side in runs
    }
    # Other work on a shared machine only ever slows a round down: each side's fastest round
    # is its least disturbed one.
    best = {side: max(r["rows_per_s"] for r in runs[side]) for side in runs}
    ratios = [
        o["rows_per_s"] / b["rows_per_s"]
        for o, b in zip(runs["ours"], runs["library"], strict=True)
    ]
    rows = runs["ours"][0]["rows"]
    assert rows == runs["library"][0]["rows"]
    # The tokenisation done once per task, charged in full to this one trial (a search of N
    # trials pays it once, not N times).
    with_prepare = rows / (med["ours"]["train_s"] + rates["prepare_s"])
    result = {
        "device": args.device,
        "shape": args.shape,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": rates["torch_threads"],
        "rows": rows,
        "batch_size": args.batch_size,
        "max_seq_length": args.seq_len,
        "queries": "head" if args.head_queries else "distinct",
        "repeat": args.repeat,
        "clicktune_rows_per_s": round(med["ours"]["rows_per_s"], 2),
        "library_rows_per_s": round(med["library"]["rows_per_s"], 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratios_each_round": [round(r, 3) for r in ratios],
        "clicktune_best_rows_per_s": round(best["ours"], 2),
        "library_best_rows_per_s": round(best["library"], 2),
        "ratio_of_best": round(best["ours"] / best["library"], 3),
        "clicktune_rows_per_s_with_tokenising": round(with_prepare, 2),
        "tokenise_once_s": round(rates["prepare_s"], 2),
        "clicktune_cpu_ms_per_row": round(med["ours"]["cpu_ms_per_row"], 1),
        "library_cpu_ms_per_row": round(med["library"]["cpu_ms_per_row"], 1),
        "clicktune_peak_mib": round(memory["ours"], 1),
        "library_peak_mib": round(memory["library"], 1),
        "clicktune_stages_s": {k: round(v, 2) for k, v in rates["stages"].items()},
        "runs": runs,
    }
    memory_name = "peak CUDA MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    table = {
        "device": f"{args.device} ({result['torch_threads']} threads)",
        "rows": f"{rows} {args.shape}",
        "batch": args.batch_size,
        "seq len": args.seq_len,
        "clicktune rows/s": result["clicktune_rows_per_s"],
        "library rows/s": result["library_rows_per_s"],
        "ratio (median of rounds)": result["ratio"],
        "ratio each round": result["ratios_each_round"],
        "best round ours/library rows/s": f"{best['ours']:.1f} / {best['library']:.1f}",
        "ratio of best": result["ratio_of_best"],
        "clicktune rows/s incl. tokenising once": result["clicktune_rows_per_s_with_tokenising"],
        "CPU ms/row clicktune": result["clicktune_cpu_ms_per_row"],
        "CPU ms/row library": result["library_cpu_ms_per_row"],
        f"clicktune {memory_name}": result["clicktune_peak_mib"],
        f"library {memory_name}": result["library_peak_mib"],
    }
    print(" | ".join(table))
    print(" | ".join(str(v) for v in table.values()))
    print("clicktune stages over all rounds (s):", result["clicktune_stages_s"])
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "train_throughput.json" if args.shape == "triplets" else "train_throughput_pairs.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
