"""Local embeddings: LOCAL_EMBEDDING_MODEL, mean-pooled over the attention mask.

The model runs on one worker thread of its own, so the event loop never waits on torch.
Requests that arrive while a batch runs are gathered into the next one (up to
LOCAL_MAX_BATCH inputs), so concurrent clients share forward passes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chatproxy.errors import ChatProxyError, InvalidRequestError, ServiceUnavailableError

log = logging.getLogger(__name__)
Vectors = tuple[list[list[float]], int]  # the vectors, and the tokens they took


@dataclass(slots=True)
class _Ask:
    texts: list[str]
    future: asyncio.Future[Vectors]


@dataclass(slots=True)
class _Loaded:
    model: Any
    tokenizer: Any
    device: str
    max_tokens: int


def _failure(result: asyncio.Future[Any]) -> Exception | None:
    """Why a forward pass gave no vectors, as an error a client may see: a pass cancelled
    by shutdown or failed inside torch is a 503, never a hang or a 500."""
    if result.cancelled():
        return ServiceUnavailableError("the local embedding model is shutting down")
    error = result.exception()
    if error is None or isinstance(error, ChatProxyError):
        return error
    log.error("local embedding pass failed", exc_info=error)
    return ServiceUnavailableError(f"the local embedding model failed: {type(error).__name__}")


class LocalEmbeddingModel:
    def __init__(self, name: str, *, device: str, dtype: str, max_batch: int) -> None:
        self.name = name
        self.max_batch = max_batch
        self._device = device
        self._dtype = dtype
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="chatproxy-embeddings")
        self._loading: Future[_Loaded] | None = None
        self._pending: deque[_Ask] = deque()
        self._busy = False

    def start(self) -> None:
        self._loading = self._worker.submit(self._load)

    def _load(self) -> _Loaded:
        from transformers import AutoModel, AutoTokenizer

        from chatproxy.local.loader import resolve_device, resolve_dtype

        where = resolve_device(self._device)
        tokenizer = AutoTokenizer.from_pretrained(self.name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        model: Any = AutoModel.from_pretrained(self.name, dtype=resolve_dtype(self._dtype, where))
        model.to(where).eval()
        max_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 512)
        log.info("local embedding model %s loaded on %s", self.name, where)
        return _Loaded(model, tokenizer, where, max_tokens)

    def not_ready_reason(self) -> str | None:
        loading = self._loading
        if loading is None or not loading.done():
            return f"the embedding model {self.name} is still loading"
        error = loading.exception()
        if error is not None:
            return f"the embedding model {self.name} failed to load: {error}"
        return None

    async def embed(self, texts: list[str]) -> Vectors:
        reason = self.not_ready_reason()
        if reason is not None:
            raise ServiceUnavailableError(reason, retry_after=5)
        ask = _Ask(texts, asyncio.get_running_loop().create_future())
        self._pending.append(ask)
        self._next_batch()
        return await ask.future

    def _next_batch(self) -> None:
        """Start a forward pass over what waits, unless one runs (it starts the next)."""
        if self._busy or not self._pending:
            return
        asks: list[_Ask] = []
        count = 0
        while self._pending and (not asks or count + len(self._pending[0].texts) <= self.max_batch):
            ask = self._pending.popleft()
            if not ask.future.done():  # a cancelled request is not computed
                asks.append(ask)
                count += len(ask.texts)
        if not asks:
            return
        self._busy = True
        texts = [text for ask in asks for text in ask.texts]
        done = asyncio.get_running_loop().run_in_executor(self._worker, self._encode, texts)
        done.add_done_callback(lambda result: self._finish(asks, result))

    def _finish(
        self, asks: list[_Ask], result: asyncio.Future[list[tuple[list[float], int]]]
    ) -> None:
        self._busy = False
        start = 0
        for ask in asks:
            part = slice(start, start + len(ask.texts))
            start = part.stop
            if ask.future.done():
                continue
            failure = _failure(result)
            if failure is not None:
                ask.future.set_exception(failure)
                continue
            rows = result.result()[part]
            too_long = [tokens for vector, tokens in rows if not vector]
            if too_long:
                ask.future.set_exception(
                    InvalidRequestError(
                        f"an input is {too_long[0]} tokens; the local embedding model takes at "
                        f"most {self._loaded().max_tokens}",
                        param="input",
                    )
                )
                continue
            ask.future.set_result(([v for v, _ in rows], sum(t for _, t in rows)))
        self._next_batch()

    def _loaded(self) -> _Loaded:
        assert self._loading is not None
        return self._loading.result()

    def _encode(self, texts: list[str]) -> list[tuple[list[float], int]]:
        """On the worker: each text's mean-pooled vector and token count; an empty vector
        for a text longer than the model takes."""
        import torch

        loaded = self._loaded()
        lengths = [len(ids) for ids in loaded.tokenizer(texts)["input_ids"]]
        fits = [i for i, n in enumerate(lengths) if n <= loaded.max_tokens]
        out: list[tuple[list[float], int]] = [([], n) for n in lengths]
        if not fits:
            return out
        batch = loaded.tokenizer([texts[i] for i in fits], padding=True, return_tensors="pt").to(
            loaded.device
        )
        with torch.inference_mode():
            # Summed in float32: float16 overflows past 65504 (an infinity, which JSON cannot
            # carry) and bfloat16's 8-bit mantissa loses most of a long input's mean.
            hidden = loaded.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        for i, vector in zip(fits, pooled.cpu().tolist(), strict=True):
            out[i] = (vector, lengths[i])
        return out

    def stop(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
