from __future__ import annotations
import asyncio
from typing import Any
from tests.conftest import Proxy

KEY = "probe-key-123456"

async def raw(client: Any, method: str, path: str, body: str = "") -> str:
    r, w = await asyncio.open_connection(client.server.host, client.server.port)
    extra = f"Content-Type: application/json\r\nContent-Length: {len(body.encode())}\r\n" if body else ""
    w.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n{body}".encode())
    data = await r.read()
    w.close()
    head, _, rest = data.decode(errors="replace").partition("\r\n\r\n")
    return head.splitlines()[0] + " | " + rest[:110].replace("\n", " ")

async def test_probe_root(proxy: Proxy) -> None:
    client = await proxy(root_path="/api", proxy_api_keys=KEY, history_store="memory://")
    for path in ["/api/v1/models", "/api//v1/models", "//api/v1/models", "/api/docs/../v1/models",
                 "/api/%2e%2e/api/v1/models", "/api/static/../v1/models", "/API/v1/models",
                 "/api/v1/models/", "/api/status", "/api/log?conversation_id=1", "/api/history?client_name=a",
                 "/api/docs/x", "/api/static/x", "/api/docs/models", "/api/static/models", "/v1/models", "/status",
                 "/api/model?client_name=a", "/api/metrics", "/api/openapi.json", "/api/", "/api", "/api%2Fv1/models", "/api/v1%2Fmodels",
                 "/static/../api/v1/models", "/health/../api/v1/models", "/api/./v1/models", "/api;/v1/models", "http://x/api/v1/models", "*"]:
        print("GET", path, await raw(client, "GET", path))
    for path in ["/api/chat", "/api/query", "/api/reset", "/api/chatgpt/", "/api/docs", "/api/static/chatgpt", "/api/docs/chatgpt"]:
        print("POST", path, await raw(client, "POST", path, '{"prompt":"x"}'))

async def test_probe_noroot(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys=KEY, history_store="memory://")
    for path in ["/docs/models", "/static/models", "/docs/", "/static/", "//v1/models", "/docs/../v1/models", "/%64ocs/models", "/static/%2e%2e/v1/models", "/static/..%2fv1/models"]:
        print("GET", path, await raw(client, "GET", path))
    for path in ["/docs", "/docs/", "/static", "/static/", "/", "/health", "/openapi.json", "/docs/chatgpt", "/static/chatgpt"]:
        print("POST", path, await raw(client, "POST", path, '{"messages":[{"role":"user","content":"hi"}]}'))
