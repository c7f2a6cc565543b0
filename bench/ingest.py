"""Ingest throughput: the consumer against a bare aiokafka read loop, in one run.

    python bench/ingest.py                 # N = 20,000 and 80,000 events
    python bench/ingest.py --sizes 10000   # quicker (N must span two polls)

For each N it publishes N realistic events (a search with 10-50 results, then 0-3 clicks)
to an embedded broker, then measures in fresh subprocesses:
  (a) a bare aiokafka loop that only reads and json.loads every record;
  (b) the clicktune consumer applying the same records to Redis until all are committed.
It prints events/s of both, the ratio b/a, and each process's peak RSS, and writes
bench/results/ingest.json. Rates are measured from the first record read to the last, so
the consumer group join (seconds, on tansu) is not counted against either.
"""

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from redis_cleanup import drop_keys  # noqa: E402  (bench/, the script's own folder)

from producer import synthetic  # noqa: E402
from producer.broker import EmbeddedBroker  # noqa: E402
from producer.event_publisher import EventPublisher  # noqa: E402
from producer.kafka_config import consumer_kwargs  # noqa: E402
from producer.settings import Settings  # noqa: E402
from schemas.topics import CLICKSTREAM  # noqa: E402


def _settings(bootstrap: str, prefix: str, run: str = "0") -> Settings:
    return Settings.load(
        kafka_bootstrap_servers=bootstrap,
        kafka_enable_idempotence=False,
        topic_prefix=prefix,
        redis_key_prefix=f"bench:{prefix}{run}:",
        consumer_group=f"{prefix}consumer{run}",
        metrics_port=0,
    )


async def _publish(settings: Settings, n: int) -> int:
    sent = 0
    async with EventPublisher(settings) as publisher:
        for event in synthetic.sessions(n, seed=42, catalog_size=5_000):
            await publisher.send(event)
            sent += 1
            if sent >= n:
                break
        await publisher.flush()
    return sent


async def _bare(settings: Settings, n: int) -> tuple[float, float]:
    consumer = AIOKafkaConsumer(
        settings.topic(CLICKSTREAM),
        **consumer_kwargs(settings, group_id=f"{settings.consumer_group}-bare"),
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    seen, t0, cpu0 = 0, None, 0.0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for records in batches.values():
                if t0 is None:
                    t0, cpu0 = time.perf_counter(), _cpu_s()
                for record in records:
                    json.loads(record.value)
                seen += len(records)
        elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    finally:
        await consumer.stop()
    return n / elapsed, cpu / n


async def _consumer(settings: Settings, n: int, freeze: bool = True) -> tuple[float, float]:
    from consumer.heap import freeze_startup_heap
    from consumer.service import ClickstreamConsumer

    service = ClickstreamConsumer(settings, serve_health=False)
    await service.start()
    if freeze:
        freeze_startup_heap()  # as `clicktune consume` does once started
    checkpoint = service.checkpoint

    def applied_and_committed() -> tuple[int, bool]:
        # The consumer's own bookkeeping, read in memory: polling Redis for the offset marks
        # every few milliseconds cost the measured process ~4% of its CPU.
        applied = sum(checkpoint.next_offset.values())
        return applied, not checkpoint._uncommitted

    t0, cpu0 = None, 0.0
    start_count = 0
    runner = asyncio.create_task(service.run())
    try:
        while True:
            done, committed = applied_and_committed()
            if t0 is None and done:
                t0, start_count, cpu0 = time.perf_counter(), done, _cpu_s()
            if done >= n and committed:
                break
            await asyncio.sleep(0.001)
        elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    finally:
        service.request_stop()
        await runner
    return (n - start_count) / elapsed, cpu / (n - start_count)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(mode: str, bootstrap: str, prefix: str, n: int, run: str) -> None:
    settings = _settings(bootstrap, prefix, run)
    # CPU seconds of the reading process over the measured span: on a shared machine this
    # moves less than the rate does (the broker and Redis are not counted).
    rate, cpu_s = asyncio.run(_bare(settings, n) if mode == "bare" else _consumer(settings, n))
    cpu_us = cpu_s * 1e6
    if mode == "consumer":
        asyncio.run(drop_keys(settings.redis_url, settings.redis_key_prefix))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": mode,
                "events_per_s": rate,
                "cpu_us_per_event": cpu_us,
                "peak_rss_mib": peak_mb,
            }
        )
    )


def _measure(mode: str, bootstrap: str, prefix: str, n: int, run: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, bootstrap, prefix, str(n), str(run)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"bench/ingest.py: the {mode} run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000])
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="alternate (a) and (b) this many times per size and report medians",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    poll = Settings.model_fields["consumer_max_records"].default
    if not args.child and min(args.sizes) < 2 * poll:
        # The consumer's clock starts at its first applied poll: with fewer records there is
        # nothing left to time.
        parser.error(f"--sizes: each N must be at least {2 * poll} (two polls of {poll})")
    if args.child:
        mode, bootstrap, prefix, n, run = args.child
        _child(mode, bootstrap, prefix, int(n), run)
        return

    rows = []
    with EmbeddedBroker() as broker:
        for n in args.sizes:
            prefix = f"bench{uuid.uuid4().hex[:6]}."
            settings = _settings(broker.bootstrap_servers, prefix)
            t = time.perf_counter()
            sent = asyncio.run(_publish(settings, n))
            publish_rate = sent / (time.perf_counter() - t)
            runs: dict[str, list[dict]] = {"bare": [], "consumer": []}
            for i in range(args.repeat):
                # Alternate, so a busy moment on the shared machine does not hit one side only;
                # each consumer run is a fresh group (and key prefix) reading from offset 0.
                runs["bare"].append(_measure("bare", broker.bootstrap_servers, prefix, sent, i))
                runs["consumer"].append(
                    _measure("consumer", broker.bootstrap_servers, prefix, sent, i)
                )
            bare, ours = (
                {
                    k: statistics.median(r[k] for r in runs[mode])
                    for k in runs[mode][0]
                    if k != "mode"
                }
                for mode in ("bare", "consumer")
            )
            rows.append(
                {
                    "events": sent,
                    "publish_events_per_s": round(publish_rate),
                    "bare_events_per_s": round(bare["events_per_s"]),
                    "consumer_events_per_s": round(ours["events_per_s"]),
                    "ratio": round(ours["events_per_s"] / bare["events_per_s"], 3),
                    "ratios_each_run": [
                        round(o["events_per_s"] / b["events_per_s"], 3)
                        for b, o in zip(runs["bare"], runs["consumer"], strict=True)
                    ],
                    "bare_cpu_us_per_event": round(bare["cpu_us_per_event"], 1),
                    "consumer_cpu_us_per_event": round(ours["cpu_us_per_event"], 1),
                    "bare_peak_rss_mib": round(bare["peak_rss_mib"], 1),
                    "consumer_peak_rss_mib": round(ours["peak_rss_mib"], 1),
                }
            )
    header = (
        "events",
        "publish ev/s",
        "bare read ev/s",
        "consumer ev/s",
        "ratio b/a",
        "ratio each run",
        "bare CPU us/ev",
        "consumer CPU us/ev",
        "bare RSS MiB",
        "consumer RSS MiB",
    )
    print(" | ".join(header))
    for r in rows:
        print(
            " | ".join(
                str(v)
                for v in (
                    r["events"],
                    r["publish_events_per_s"],
                    r["bare_events_per_s"],
                    r["consumer_events_per_s"],
                    r["ratio"],
                    r["ratios_each_run"],
                    r["bare_cpu_us_per_event"],
                    r["consumer_cpu_us_per_event"],
                    r["bare_peak_rss_mib"],
                    r["consumer_peak_rss_mib"],
                )
            )
        )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
