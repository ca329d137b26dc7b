"""The older servers' routes, served as thin adapters onto the one chat pipeline.

chatproxy replaces several small servers; their clients keep working when pointed here.
Each module is one older server: its request and answer shapes, mapped onto a `ChatCall`
and a conversation of the history layer (each older server kept its conversations on the
server, so their routes need HISTORY_STORE). `routes.setup_compat_routes` registers them.

- `llama_log`: the Llama3.5 Chat API (Flask, a local Llama 3): `POST /chat {prompt,
  conversation_id}`, `GET /log`.
- `ernie_session`: the Qianfan ERNIE-Bot Flask server: `POST /chat {user_input}`, the
  conversation kept per `sessionid` cookie.
- `pure_model_api`: the pure Qwen/Llama model API: `POST /chat {message}`, `POST /reset`,
  and its fields in `GET /status`.
- `client_query`: the OpenAI conversation server: `POST /query`, `GET/POST /model`,
  `GET/DELETE /history?client_name=`.

The aiohttp chatgpt/gigachat proxy's routes (`POST /chatgpt/`, `POST /gigachat/`) are
chatproxy's own native routes, so it needs no module here.
"""

from chatproxy.compat.routes import setup_compat_routes

__all__ = ["setup_compat_routes"]
