from __future__ import annotations
import asyncio
from tests.conftest import Proxy

async def rawb(client, data: bytes) -> str:
    r, w = await asyncio.open_connection(client.server.host, client.server.port)
    w.write(data)
    out = await r.read()
    w.close()
    return out.decode(errors="replace")[:300]

async def test_probe_hdr(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys="good-key-1234", rate_limit_rpm=5)
    for auth in [b"Bearer \xff\xfe", b"Bearer \xc3\xa9t\xc3\xa9", b"\xff \xff", b"Bearer good-key-1234\xff"]:
        print(auth, await rawb(client, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + auth + b"\r\n\r\n"))
