"""One batched `generate` call; imported by the worker thread only (it imports torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from chatproxy.local.job import Job, emit_step
from chatproxy.local.loader import LoadedModel

YieldCheck = Callable[[list[Job]], bool]
# Re-reading the running rows costs a prefill: let a batch run a few steps before it yields.
MIN_STEPS_BEFORE_JOIN = 4


class RowStreamer(BaseStreamer):
    """Receives each step's tokens for the whole batch and routes them to their jobs."""

    def __init__(self, jobs: list[Job], eos_ids: frozenset[int], on_step: Any) -> None:
        self.jobs = jobs
        self.eos_ids = eos_ids
        self.on_step = on_step
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        live = [(job, token) for job, token in zip(self.jobs, tokens, strict=True) if not job.done]

        def step() -> None:
            for job, token in live:
                job.take(token, self.eos_ids)

        emit_step([job for job, _ in live], step)
        self.on_step(len(live))

    def end(self) -> None:
        pass


class RowStop(StoppingCriteria):
    """Per row: stop a job that finished, hit its own max_tokens, or was cancelled. Whole
    batch: stop at this step boundary when `should_yield` says newcomers are waiting."""

    def __init__(self, jobs: list[Job], should_yield: YieldCheck | None) -> None:
        self.jobs = jobs
        self.should_yield = should_yield
        self.steps = 0
        self.yielded = False

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        self.steps += 1
        for job in self.jobs:
            if job.aborted and not job.done:
                job.finish("cancelled")
        done = [job.done for job in self.jobs]
        if (
            self.should_yield is not None
            and self.steps >= MIN_STEPS_BEFORE_JOIN
            and not all(done)
            and self.should_yield(self.jobs)
        ):
            self.yielded = True
            done = [True] * len(self.jobs)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def left_padded(jobs: list[Job], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [job.input_ids() for job in jobs]
    width = max(len(row) for row in rows)
    ids = [[pad_id] * (width - len(row)) + row for row in rows]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
    return (
        torch.tensor(ids, dtype=torch.long, device=device),
        torch.tensor(mask, dtype=torch.long, device=device),
    )


def generate(
    loaded: LoadedModel, jobs: list[Job], on_step: Any, should_yield: YieldCheck | None = None
) -> bool:
    """Run `jobs` (same sampling parameters) together; results leave through the jobs.
    True when the batch stopped early to let waiting jobs join (unfinished jobs resume)."""
    input_ids, attention_mask = left_padded(jobs, loaded.pad_id, loaded.device)
    sample, temperature, top_p = jobs[0].sampling_key()
    options: dict[str, Any] = {"do_sample": sample}
    if sample:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    else:  # silence the model's own sampling defaults, which greedy decoding ignores
        options.update(temperature=None, top_p=None, top_k=None)
    eos = frozenset(loaded.eos_ids)
    stop = RowStop(jobs, should_yield)
    with torch.inference_mode():
        loaded.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max(job.remaining() for job in jobs),
            pad_token_id=loaded.pad_id,
            eos_token_id=loaded.eos_ids,
            streamer=RowStreamer(jobs, eos, on_step),
            stopping_criteria=StoppingCriteriaList([stop]),
            **options,
        )
    return stop.yielded
