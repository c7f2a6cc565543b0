"""Reading clickstream from JSON-lines files: one event per line, each checked on its own."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

from schemas.base import Event
from schemas.codec import InvalidEvent, decode
from schemas.topics import CLICKSTREAM, RELEASE, TopicSpec

#: What a JSONL file may hold: clickstream and release events, routed to their topics.
PUBLISHABLE = TopicSpec(
    key="publishable",
    name=f"{CLICKSTREAM.name} or {RELEASE.name}",
    description="Events a client may publish.",
    key_description="",
    messages=CLICKSTREAM.messages + RELEASE.messages,
)
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str
    detail: str
    text: str

    def message(self) -> str:
        return f"line {self.line}: {self.reason}: {self.detail}"


def parse_line(raw: bytes, line: int) -> Event | Rejected:
    try:
        return decode(PUBLISHABLE, raw.strip())
    except InvalidEvent as exc:
        return Rejected(
            line, exc.reason.value, exc.detail, raw.decode("utf-8", errors="replace").rstrip("\n")
        )


async def read_lines(stream: BinaryIO) -> AsyncIterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each non-blank line; reads in a thread, in chunks,
    so a slow pipe never blocks the event loop (and the producer's sends)."""
    number = 0
    while True:
        chunk = await asyncio.to_thread(stream.readlines, _CHUNK_BYTES)
        if not chunk:
            return
        for raw in chunk:
            number += 1
            if raw.strip():
                yield number, raw
