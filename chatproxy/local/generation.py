"""One batched `generate` call; imported by the worker thread only (it imports torch)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from chatproxy.local.job import Job
from chatproxy.local.loader import LoadedModel


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
        active = 0
        for job, token in zip(self.jobs, tokens, strict=True):
            if not job.done:
                active += 1
                job.take(token, self.eos_ids)
        self.on_step(active)

    def end(self) -> None:
        pass


class RowStop(StoppingCriteria):
    """Per row: stop a job that finished, hit its own max_tokens, or was cancelled."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        for job in self.jobs:
            if job.aborted and not job.done:
                job.finish("cancelled")
        return torch.tensor(
            [job.done for job in self.jobs], dtype=torch.bool, device=input_ids.device
        )


def left_padded(jobs: list[Job], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(job.prompt_ids) for job in jobs)
    ids = [[pad_id] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs]
    mask = [[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs]
    return (
        torch.tensor(ids, dtype=torch.long, device=device),
        torch.tensor(mask, dtype=torch.long, device=device),
    )


def generate(loaded: LoadedModel, jobs: list[Job], on_step: Any) -> None:
    """Run `jobs` (same sampling parameters) together; results leave through the jobs."""
    input_ids, attention_mask = left_padded(jobs, loaded.pad_id, loaded.device)
    sample, temperature, top_p = jobs[0].sampling_key()
    options: dict[str, Any] = {"do_sample": sample}
    if sample:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    else:  # silence the model's own sampling defaults, which greedy decoding ignores
        options.update(temperature=None, top_p=None, top_k=None)
    eos = frozenset(loaded.eos_ids)
    with torch.inference_mode():
        loaded.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max(job.max_new_tokens for job in jobs),
            pad_token_id=loaded.pad_id,
            eos_token_id=loaded.eos_ids,
            streamer=RowStreamer(jobs, eos, on_step),
            stopping_criteria=StoppingCriteriaList([RowStop(jobs)]),
            **options,
        )
