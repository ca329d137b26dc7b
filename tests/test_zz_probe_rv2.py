from __future__ import annotations
import asyncio
from typing import Any
from tests.test_compat_llama_log import local_proxy, LocalProxy, StubLocal  # noqa
from tests.test_zz_probe_rv import raw

async def test_probe_compat(local_proxy: LocalProxy) -> None:
    client, stub = await local_proxy()
    bodies = ['{"prompt":"x","conversation_id":99999999999999999999999999}', '{"prompt":"x","conversation_id":true}',
              '{"prompt":"x","conversation_id":"12"}', '{"prompt":"x","conversation_id":1.5}', '{"prompt":"x","conversation_id":-1}',
              '{"prompt":"x","conversation_id":null}', '{"prompt":["x"]}', '{"prompt":null}', '{"prompt":1}', '{"prompt":""}',
              '{"message":"x","max_tokens":1e400}', '{"message":"x","max_tokens":99999999999999999999999}', '{"message":"x","temperature":"NaN"}',
              '{"message":"x","temperature":NaN}', '{"user_input":{"a":1}}', '{"prompt":"x","message":"y"}', '[]', '"x"', '{', '',
              '{"prompt":"\\ud800"}', '{"user_input":"\\u0000"}']
    for b in bodies:
        print("POST /chat", b[:60], await raw(client, "POST", "/chat", b))
    for q in ["/log?conversation_id=1e3", "/log?conversation_id=99999999999999999999999999", "/log?conversation_id=", "/log",
              "/log?conversation_id=%00", "/log?conversation_id=1&conversation_id=2", "/model?client_name=" + "a"*2000,
              "/model?client_name=%00", "/history?client_name=", "/history?client_name=a&client_name=b", "/log?conversation_id=-5"]:
        print("GET", q[:70], await raw(client, "GET", q))
    for b in ['{"input":"x","client_name":"' + "a"*1000 + '"}', '{"input":"x","client_name":5}', '{"input":"x","client_name":"a/b"}',
              '{"input":"x","client_name":"\\u0000"}', '{"input":"x"}']:
        print("POST /query", b[:60], await raw(client, "POST", "/query", b))
    for b in ['{"model":"x","client_name":"a"}', '{"model":"","client_name":"a"}', '{"model":"nope/x","client_name":"a"}', '{"model":"chatgpt/","client_name":"a"}', '{"model":5,"client_name":"a"}', '{"model":"' + "m"*5000 + '","client_name":"a"}']:
        print("POST /model", b[:60], await raw(client, "POST", "/model", b))
        print("  GET /model", await raw(client, "GET", "/model?client_name=a"))
        print("  POST /query", await raw(client, "POST", "/query", '{"input":"hi","client_name":"a"}'))
    print("reset", await raw(client, "POST", "/reset", "not json"))
    print("status", await raw(client, "GET", "/status"))
