"""The floor: a bare aiohttp pass-through proxy, measured beside chatproxy for reference."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from chatproxy.__main__ import new_loop

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession()
    yield
    await app[SESSION].close()


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    async with request.app[SESSION].post(request.app[UPSTREAM], data=body, headers=headers) as resp:
        data = await resp.read()
    return web.Response(body=data, status=resp.status, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/chatgpt/", forward)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=new_loop())


if __name__ == "__main__":
    main()
