"""The worker thread that owns the model: a bounded queue in, batches through `generate`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from typing import Any

from chatproxy.errors import RateLimitError, ServiceUnavailableError, UpstreamError
from chatproxy.local.job import Job
from chatproxy.local.loader import LoadedModel, LocalModelError, load

log = logging.getLogger(__name__)
RATE_WINDOW = 10.0  # seconds of history behind "recent tokens/s"
STOP = None


class LocalEngine:
    """Requests go in through `submit`; the worker batches whatever waits when it is free."""

    def __init__(
        self,
        *,
        model_name: str,
        device: str = "auto",
        dtype: str = "auto",
        max_batch: int = 8,
        max_queue: int = 64,
        batch_window: float = 0.0,
        continuous: bool = True,
    ) -> None:
        self.model_name = model_name
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        # How long a free worker waits for company before starting a batch smaller than full.
        self.batch_window = batch_window
        # Let waiting requests join a running batch at a step boundary (by recompute).
        self.continuous = continuous
        self.rejoins = 0
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._pending: list[Job] = []
        self._thread = threading.Thread(target=self._run, name="chatproxy-local", daemon=True)
        self.loaded: LoadedModel | None = None
        self.error: str | None = None
        self.stopping = False
        self.current_batch = 0
        self.largest_batch = 0
        self.requests_served = 0
        self.requests_cancelled = 0
        self.tokens_generated = 0
        self._steps: deque[tuple[float, int]] = deque()
        self._seconds_per_step = 0.05

    # --- event loop side ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def not_ready_reason(self) -> str | None:
        if self.error is not None:
            return self.error
        if self.loaded is None:
            return f"loading {self.model_name}"
        if self.stopping:
            return "stopping"
        return None

    def check_ready(self) -> LoadedModel:
        """The loaded model, or the 503 that says why there is none to use."""
        reason = self.not_ready_reason()
        if reason is not None or self.loaded is None:
            raise ServiceUnavailableError(f"local model cannot serve: {reason}", retry_after=5)
        return self.loaded

    def submit(self, job: Job) -> None:
        self.check_ready()
        job.on_finish = self._count_finished
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            wait = self._seconds_per_step * max(job.max_new_tokens, 1) * 0.5
            raise RateLimitError(
                f"the local model's queue is full ({self._jobs.maxsize} waiting); retry later",
                retry_after=max(1.0, wait),
            ) from None

    async def stop(self, wait: float = 30.0) -> None:
        """Finish the running batch, cancel what waits, and let the thread end."""
        self.stopping = True
        for job in list(self._pending):
            job.aborted = True
        with contextlib.suppress(queue.Full):  # if full, the worker sees `stopping` anyway
            self._jobs.put_nowait(STOP)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, wait)

    def queue_depth(self) -> int:
        return self._jobs.qsize() + len(self._pending)

    def status(self) -> dict[str, Any]:
        loaded = self.loaded
        out: dict[str, Any] = {
            "model": self.model_name,
            "state": self.not_ready_reason() or "ready",
            "queue_depth": self.queue_depth(),
            "batch_size": self.current_batch,
            "largest_batch": self.largest_batch,
            "max_batch": self.max_batch,
            "requests_served": self.requests_served,
            "requests_cancelled": self.requests_cancelled,
            "continuous_batching": self.continuous,
            "rejoins": self.rejoins,
            "tokens_generated": self.tokens_generated,
            "tokens_per_s": round(self.recent_tokens_per_second(), 1),
        }
        if loaded is not None:
            out.update(
                device=loaded.device,
                dtype=loaded.dtype,
                parameters=loaded.parameters,
                context_length=loaded.context_length,
                memory_allocated=memory_allocated(loaded.device),
            )
        return out

    def recent_tokens_per_second(self) -> float:
        steps = list(self._steps)
        now = time.monotonic()
        recent = [(t, n) for t, n in steps if now - t <= RATE_WINDOW]
        if len(recent) < 2:
            return 0.0
        span = recent[-1][0] - recent[0][0]
        return sum(n for _, n in recent[1:]) / span if span > 0 else 0.0

    # --- worker thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.loaded = load(self.model_name, device=self.device, dtype=self.dtype)
        except LocalModelError as exc:
            self.error = str(exc)
            log.error("local model is off: %s", exc)
            return
        except Exception as exc:  # a broken checkpoint can raise almost anything
            self.error = f"cannot load {self.model_name}: {type(exc).__name__}: {exc}"
            log.exception("local model is off")
            return
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            self._generate(batch)
        for job in self._pending:
            job.aborted = True
            job.finish("cancelled")

    def _next_batch(self) -> list[Job] | None:
        """Block for work, then take every waiting job that shares the first one's sampling."""
        while True:
            if not self._pending:
                if not self._accept(self._jobs.get()):
                    return None
                self._wait_for_company()
            self._drain_queue()
            if self.stopping:
                return None
            for job in [j for j in self._pending if j.aborted]:
                self._pending.remove(job)
                job.finish("cancelled")
            if not self._pending:
                continue
            key = self._pending[0].sampling_key()
            batch = [j for j in self._pending if j.sampling_key() == key][: self.max_batch]
            self._pending = [j for j in self._pending if j not in batch]
            return batch

    def _accept(self, job: Job | None) -> bool:
        """Take one arrival into `_pending`; False when it is the stop signal."""
        if job is STOP:
            self.stopping = True
            return False
        self._pending.append(job)
        return True

    def _drain_queue(self) -> None:
        """Move whatever waits in the queue to `_pending`, without blocking."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not self._accept(job):
                return

    def _should_yield(self, batch: list[Job]) -> bool:
        """At a step boundary: do waiting jobs fit into this batch if it restarts now?"""
        self._drain_queue()
        active = sum(not job.done for job in batch)
        if self.stopping or active >= self.max_batch:
            return False
        key = batch[0].sampling_key()
        return any(j.sampling_key() == key and not j.aborted for j in self._pending)

    def _wait_for_company(self) -> None:
        deadline = time.monotonic() + self.batch_window
        while self._jobs.qsize() + len(self._pending) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                job = self._jobs.get(timeout=left)
            except queue.Empty:
                return
            if not self._accept(job):
                return

    def _generate(self, batch: list[Job]) -> None:
        from chatproxy.local import generation

        assert self.loaded is not None
        self.current_batch = len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        started = time.monotonic()
        self._steps.append((started, 0))
        join = self._should_yield if self.continuous else None
        try:
            yielded = generation.generate(self.loaded, batch, self._record_step, join)
        except Exception as exc:
            log.exception("local generation failed for a batch of %d", len(batch))
            for job in batch:
                job.done = True
                job.emit(UpstreamError(f"local generation failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            self.current_batch = 0
        unfinished = [job for job in batch if not job.done]
        if yielded:
            # Continuous batching: finished rows have left; unfinished ones go first in line
            # and are re-read together with the newcomers in the next generate call.
            self.rejoins += 1
            self._pending[:0] = unfinished
            return
        for job in unfinished:  # generate ended without the job's own stop: its length ran out
            job.finish("cancelled" if job.aborted else "length")

    def _count_finished(self, job: Job) -> None:
        self.requests_served += 1
        self.requests_cancelled += job.finish_reason == "cancelled"

    def _record_step(self, tokens: int) -> None:
        now = time.monotonic()
        if self._steps:
            self._seconds_per_step = 0.9 * self._seconds_per_step + 0.1 * (now - self._steps[-1][0])
        self._steps.append((now, tokens))
        self.tokens_generated += tokens
        while self._steps and now - self._steps[0][0] > RATE_WINDOW:
            self._steps.popleft()


def memory_allocated(device: str) -> int:
    """Bytes: CUDA memory held by tensors on a GPU, the process's resident set on a CPU."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
