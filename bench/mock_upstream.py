"""A minimal OpenAI-compatible upstream for benchmarks: fixed answers, optional streaming."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct

from aiohttp import web

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
).encode()


def chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=COMPLETION, content_type="application/json")
    chunks = int(request.app["chunks"])
    gap = float(request.app["gap"])
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for number in range(chunks):
        await resp.write(chunk(f"tok{number} "))
        if gap:
            await asyncio.sleep(gap)
    await resp.write(chunk(None, "stop"))
    await resp.write(b"data: [DONE]\n\n")
    return resp


def embedding(vector: object) -> bytes:
    """One input's vector as text-embedding-3-small answers it: 1536 dimensions."""
    item = {"object": "embedding", "index": 0, "embedding": vector}
    usage = {"prompt_tokens": 8, "total_tokens": 8}
    body = {"object": "list", "data": [item], "model": "text-embedding-3-small", "usage": usage}
    return json.dumps(body).encode()


FLOATS = [0.0123456789] * 1536
EMBEDDING = {
    "float": embedding(FLOATS),
    "base64": embedding(base64.b64encode(struct.pack("<1536f", *FLOATS)).decode()),
}


async def embeddings(request: web.Request) -> web.Response:
    encoding = (await request.json()).get("encoding_format", "float")
    return web.Response(body=EMBEDDING[encoding], content_type="application/json")


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini"}]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.0)
    args = parser.parse_args()
    app = web.Application()
    app["chunks"], app["gap"] = args.chunks, args.gap
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/embeddings", embeddings)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
