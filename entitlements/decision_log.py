"""The decision log's writer (issue 15): JSON lines to stdout or a file, off the hot path.

A check hands its ``DecisionRecord`` to ``offer``, which only appends it to a
bounded ``asyncio.Queue`` (or, when the queue is full, drops it and counts the drop
in ``entitlements_decision_log_dropped_total``): a check never waits for the log.
One writer task takes the records in batches, renders them with orjson and hands
each batch to one daemon thread that writes and flushes it, so a slow disk or a
pipe nobody reads stalls the log, never the event loop. Each batch is written whole
lines at a time (a file is opened for append, so several workers may share it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, Final

import orjson

from entitlements import metrics
from entitlements.service.decisions import DecisionRecord, record_json

log = logging.getLogger("entitlements")

BATCH: Final = 512
"""Records rendered and written together at most."""


def _open_stdout() -> BinaryIO:
    return sys.stdout.buffer


class DecisionLogWriter:
    """Implements the ``DecisionLog`` port. ``target``: ``"stdout"`` or a file path (opened,
    for append, by the writer thread: opening a FIFO waits for its reader there)."""

    def __init__(
        self, target: str, *, sample_allows: float = 1.0, queue_size: int = 10_000
    ) -> None:
        self.target = target
        self.sample_allows = sample_allows
        self.queue: asyncio.Queue[DecisionRecord] = asyncio.Queue(queue_size)
        self.written = 0
        self._open: Callable[[], BinaryIO] = (
            _open_stdout if target == "stdout" else lambda: Path(target).open("ab")  # noqa: SIM115
        )
        self._batches: queue.SimpleQueue[tuple[bytes, int, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._in_hand = 0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the DecisionLog port (called on the request path) -------------------------------

    def keep(self, allowed: bool) -> bool:
        return not allowed or self.sample_allows >= 1.0 or random.random() < self.sample_allows

    def offer(self, record: DecisionRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            metrics.DECISION_LOG_DROPPED.inc()

    # --- the writer ------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (on the running loop) and its thread."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._write_batches, name="entitlements-decision-log", daemon=True
        )
        self._thread.start()
        self._task = asyncio.create_task(self._run(), name="entitlements-decision-log")

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds), then stop. Records
        a stalled target never took are counted as dropped."""
        task = self._task
        if task is None:
            return
        self._task = None
        deadline = time.monotonic() + timeout
        # Polled, at shutdown only: an event would cost every offer() on the hot path.
        while (self._in_hand or not self.queue.empty()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        lost = self.queue.qsize() + self._in_hand
        if lost:
            metrics.DECISION_LOG_DROPPED.inc(lost)
            log.warning("decision log: %d line(s) not written at shutdown (target stalled)", lost)
        self._batches.put(None)

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = self._take(first)
            self._in_hand = len(batch)
            await self._write(batch)
            self._in_hand = 0

    def _take(self, first: DecisionRecord) -> list[DecisionRecord]:
        batch = [first]
        while len(batch) < BATCH and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def _write(self, batch: list[DecisionRecord]) -> None:
        data = b"".join(
            orjson.dumps(record_json(r), option=orjson.OPT_APPEND_NEWLINE) for r in batch
        )
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._batches.put((data, len(batch), done))
        await done
        self.written += len(batch)

    def _write_batches(self) -> None:
        """The writer thread: opens the target, then writes and flushes each batch."""
        stream: BinaryIO | None = None
        while True:
            item = self._batches.get()
            if item is None:
                break
            data, count, done = item
            error: BaseException | None = None
            try:
                if stream is None:
                    stream = self._open()
                stream.write(data)
                stream.flush()
            except OSError as exc:
                error = exc
            self._settle(done, count, error)
        if stream is not None and self.target != "stdout":
            stream.close()

    def _settle(self, done: asyncio.Future[None], count: int, error: BaseException | None) -> None:
        assert self._loop is not None

        def settle() -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:  # a line lost to the disk is a line dropped: count it, keep going
                log.warning("decision log: cannot write to %s: %s", self.target, error)
                metrics.DECISION_LOG_DROPPED.inc(count)
                done.set_result(None)

        with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(settle)


def decision_log(target: str, *, sample_allows: float, queue_size: int) -> DecisionLogWriter | None:
    """The writer the settings ask for (``off``: None)."""
    if target == "off":
        return None
    return DecisionLogWriter(target, sample_allows=sample_allows, queue_size=queue_size)


__all__ = ["BATCH", "DecisionLogWriter", "decision_log"]
