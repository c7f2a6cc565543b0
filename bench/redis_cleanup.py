"""Removing what a benchmark run left in Redis under its own key prefix."""

import redis.asyncio as aioredis


async def drop_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN, then DEL in chunks of 1,000)."""
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()
