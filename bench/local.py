"""The local provider on a tiny model (CPU): batching gain, server overhead, first-token time.

In one run: 8 concurrent requests through `/local/` against the same 8 one at a time
(aggregate tokens/s), the batched server path against `model.generate` called directly on
the same 8 prompts (wall time), and time to first token for 8 concurrent streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
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


async def ask(
    session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int
) -> dict[str, Any]:
    async with session.post(
        f"{url}/local/",
        json={
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": max_tokens,
        },
    ) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def first_token(
    session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int
) -> float:
    started = time.perf_counter()
    async with session.post(
        f"{url}/local/",
        json={
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": max_tokens,
            "stream": True,
        },
    ) as resp:
        async for line in resp.content:
            if line.startswith(b"event: delta") or line.startswith(b"event: done"):
                elapsed = (time.perf_counter() - started) * 1000
                await resp.read()
                return elapsed
    raise AssertionError("stream ended without an event")


async def through_server(url: str, max_tokens: int, rounds: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        await ask(session, url, "warm up", 4)
        sequential_s = batched_s = 0.0
        sequential_tokens = batched_tokens = 0
        for _ in range(rounds):
            started = time.perf_counter()
            for prompt in PROMPTS:
                body = await ask(session, url, prompt, max_tokens)
                sequential_tokens += body["usage"]["completion_tokens"]
            sequential_s += time.perf_counter() - started
            started = time.perf_counter()
            bodies = await asyncio.gather(*(ask(session, url, p, max_tokens) for p in PROMPTS))
            batched_s += time.perf_counter() - started
            batched_tokens += sum(b["usage"]["completion_tokens"] for b in bodies)
        ttft = await asyncio.gather(*(first_token(session, url, p, max_tokens) for p in PROMPTS))
        async with session.get(f"{url}/status") as resp:
            status = (await resp.json())["providers"]["local"]
    return {
        "sequential_tps": sequential_tokens / sequential_s,
        "batched_tps": batched_tokens / batched_s,
        "batched_wall": batched_s / rounds,
        "ttft_median": statistics.median(ttft),
        "ttft_max": max(ttft),
        "largest_batch": status["largest_batch"],
    }


def direct_generate(model_dir: Path, max_tokens: int, rounds: int) -> float:
    """Seconds for `model.generate` on the same 8 prompts, batched, greedy, same settings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    system = {
        "role": "system",
        "content": "You are a helpful assistant. Answer clearly and concisely.",
    }
    chats = [[system, {"role": "user", "content": p}] for p in PROMPTS]
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
    with torch.inference_mode():
        model.generate(**batch, **{**options, "max_new_tokens": 4})
        started = time.perf_counter()
        for _ in range(rounds):
            model.generate(**batch, **options)
    return (time.perf_counter() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_model(Path(folder) / "tiny-qwen2", "qwen2", context=512)
        with (
            mock_upstream() as (upstream, _),
            chatproxy(
                upstream,
                LOCAL_MODEL=str(model_dir),
                LOCAL_BATCH_WINDOW_MS="20",
                LOG_LEVEL="WARNING",
            ) as (url, _proc, _startup),
        ):
            server = asyncio.run(wait_then(url, args.max_tokens, args.rounds))
        direct = direct_generate(model_dir, args.max_tokens, args.rounds)
    print(f"tiny Qwen2 on CPU, {len(PROMPTS)} prompts, greedy, max_tokens={args.max_tokens}")
    print(f"one at a time:   {server['sequential_tps']:8.1f} tokens/s")
    print(
        f"8 concurrent:    {server['batched_tps']:8.1f} tokens/s "
        f"({server['batched_tps'] / server['sequential_tps']:.2f}x one at a time; "
        f"largest batch {server['largest_batch']:.0f})"
    )
    print(
        f"8 concurrent through chatproxy {server['batched_wall'] * 1000:.1f} ms vs "
        f"model.generate on the same batch {direct * 1000:.1f} ms: server path "
        f"{(server['batched_wall'] / direct - 1) * 100:+.1f}%"
    )
    print(
        f"time to first token, 8 concurrent streams: median {server['ttft_median']:.1f} ms, "
        f"max {server['ttft_max']:.1f} ms"
    )
    print(json.dumps({k: round(v, 3) for k, v in server.items()}))


async def wait_then(url: str, max_tokens: int, rounds: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            async with session.get(f"{url}/ready") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.05)
    return await through_server(url, max_tokens, rounds)


if __name__ == "__main__":
    main()
