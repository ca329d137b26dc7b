"""The local provider on a tiny model (CPU): batching gain, server overhead, first-token time.

In one run: 8 concurrent requests through `/local/` against the same 8 one at a time
(aggregate tokens/s); the batched server path against `model.generate` called directly on
the same 8 prompts (wall time; the two alternate, round after round, and medians are
compared, since CPU speed drifts on a shared machine); and time to first token for 8
concurrent streams.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ROOT, chatproxy, mock_upstream

sys.path.insert(0, str(ROOT))
from tests.tiny_models import build_model

PROMPTS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "how are you today?",
    "a proxy forwards chat messages",
    "Привет! Как дела?",
    "I am fine thank you",
    "the lazy dog sleeps all day long in the sun",
    "你好，世界",
]
SYSTEM = "You are a helpful assistant. Answer clearly and concisely."


def greedy(prompt: str, max_tokens: int) -> dict[str, Any]:
    """The benchmark's request: one prompt, greedy, a fixed number of tokens at most."""
    return {
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }


async def ask(
    session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int
) -> dict[str, Any]:
    async with session.post(f"{url}/local/", json=greedy(prompt, max_tokens)) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def first_token(
    session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int
) -> float:
    started = time.perf_counter()
    body = {**greedy(prompt, max_tokens), "stream": True}
    async with session.post(f"{url}/local/", json=body) as resp:
        async for line in resp.content:
            if line.startswith((b"event: delta", b"event: done")):
                elapsed = (time.perf_counter() - started) * 1000
                await resp.read()
                return elapsed
    raise AssertionError("stream ended without an event")


async def one_at_a_time(url: str, max_tokens: int) -> tuple[int, float]:
    async with aiohttp.ClientSession() as session:
        started, tokens = time.perf_counter(), 0
        for prompt in PROMPTS:
            tokens += (await ask(session, url, prompt, max_tokens))["usage"]["completion_tokens"]
        return tokens, time.perf_counter() - started


async def all_at_once(url: str, max_tokens: int) -> tuple[int, float]:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        bodies = await asyncio.gather(*(ask(session, url, p, max_tokens) for p in PROMPTS))
        elapsed = time.perf_counter() - started
    return sum(b["usage"]["completion_tokens"] for b in bodies), elapsed


async def streams_and_status(url: str, max_tokens: int) -> tuple[list[float], dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        ttft = await asyncio.gather(*(first_token(session, url, p, max_tokens) for p in PROMPTS))
        async with session.get(f"{url}/status") as resp:
            status: dict[str, Any] = (await resp.json())["providers"]["local"]
    return list(ttft), status


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            async with session.get(f"{url}/ready") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError("the local model did not load")


def direct_runner(model_dir: Path, max_tokens: int) -> Callable[[], float]:
    """A function timing `model.generate` on the 8 prompts, batched, greedy, same settings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    chats = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}] for p in PROMPTS
    ]
    texts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    options = {
        "max_new_tokens": max_tokens,
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }

    def run() -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            model.generate(**batch, **options)
            return time.perf_counter() - started

    run()  # warm up
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_model(Path(folder) / "tiny-qwen2", "qwen2", context=512)
        direct = direct_runner(model_dir, args.max_tokens)
        with (
            mock_upstream() as (upstream, _),
            chatproxy(
                upstream,
                LOCAL_MODEL=str(model_dir),
                LOCAL_BATCH_WINDOW_MS="20",
                LOG_LEVEL="WARNING",
            ) as (url, _proc, _startup),
        ):
            asyncio.run(wait_ready(url))
            asyncio.run(all_at_once(url, 4))  # warm up
            sequential, batched, direct_s = [], [], []
            for _ in range(args.rounds):
                sequential.append(asyncio.run(one_at_a_time(url, args.max_tokens)))
                batched.append(asyncio.run(all_at_once(url, args.max_tokens)))
                direct_s.append(direct())
            ttft, status = asyncio.run(streams_and_status(url, args.max_tokens))
    seq_tps = statistics.median(tokens / seconds for tokens, seconds in sequential)
    batch_tps = statistics.median(tokens / seconds for tokens, seconds in batched)
    server_s = statistics.median(seconds for _, seconds in batched)
    direct_med = statistics.median(direct_s)
    print(
        f"tiny Qwen2 on CPU, {len(PROMPTS)} prompts, greedy, max_tokens={args.max_tokens}, "
        f"medians of {args.rounds} alternating rounds"
    )
    print(f"one at a time:   {seq_tps:8.1f} tokens/s")
    print(
        f"8 concurrent:    {batch_tps:8.1f} tokens/s ({batch_tps / seq_tps:.2f}x one at a time;"
        f" largest batch {status['largest_batch']}, rejoins {status['rejoins']})"
    )
    print(
        f"8 concurrent through chatproxy {server_s * 1000:.1f} ms vs model.generate on the "
        f"same batch {direct_med * 1000:.1f} ms: server path "
        f"{(server_s / direct_med - 1) * 100:+.1f}%"
    )
    print(
        f"time to first token, 8 concurrent streams: median {statistics.median(ttft):.1f} ms,"
        f" max {max(ttft):.1f} ms"
    )


if __name__ == "__main__":
    main()
