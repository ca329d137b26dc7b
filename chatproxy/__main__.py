"""`python -m chatproxy` / `chatproxy`: run the server (or `chat`, a terminal client)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from chatproxy.config import LOCAL_MODEL_PRESETS, Settings

log = logging.getLogger("chatproxy")
# Allocations (net of frees) between young collections once serving; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatproxy", description=__doc__)
    parser.add_argument("--host", help="address to listen on (HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (PORT)")
    parser.add_argument(
        "--env-file", type=Path, default=None, help="read settings from this file instead of ./.env"
    )
    parser.add_argument(
        "--local-model",
        "--model",  # the flag one older server took (seeds/004)
        dest="local_model",
        metavar="PATH_OR_ID",
        help=f"serve a local model; presets: {', '.join(LOCAL_MODEL_PRESETS)}",
    )
    parser.add_argument("--device", help="local model device: auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--workers", type=int, metavar="N", help="serving processes sharing the port (WORKERS)"
    )
    commands = parser.add_subparsers(dest="command", metavar="{chat}")
    chat = commands.add_parser("chat", help="talk to a running chatproxy from the terminal")
    chat.add_argument("--url", default="http://127.0.0.1:8080", help="where chatproxy runs")
    chat.add_argument(
        "--provider",
        help="chatgpt (default), gigachat, ernie or local; with --conversation, its own",
    )
    chat.add_argument("--model", help="model name (default: the provider's)")
    chat.add_argument(
        "--api-key",
        default=os.environ.get("CHATPROXY_API_KEY"),
        help="one of PROXY_API_KEYS, when the proxy wants one (default: $CHATPROXY_API_KEY)",
    )
    chat.add_argument(
        "--conversation", metavar="ID", help="resume this conversation the server keeps"
    )
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "local_model": args.local_model,
            "local_device": args.device,
            "log_level": args.log_level,
            "workers": args.workers,
        }.items()
        if value is not None
    }
    env_file = args.env_file or Path(".env")
    if args.env_file is not None and not env_file.exists():
        raise SystemExit(f"chatproxy: --env-file {env_file} does not exist")
    return Settings(_env_file=env_file, **overrides)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it costs half the CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def settle_gc(app: object) -> None:
    """on_startup of the served app: tune the cyclic collector for serving.

    Everything built so far (modules, settings, clients) lives as long as the process, so
    it is frozen out of the collector's sight, as Instagram's servers do. And Python's
    young-generation threshold of 700 allocations is a few requests' worth at 64
    connections: collections ran every few requests, found in-flight objects alive and
    promoted them, and the full collections that followed stopped the loop for ~40 ms
    each. bench/overhead.py at 64 connections measured 0.9 s of 5 s in the collector.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    from chatproxy import server
    from chatproxy.app import create_app
    from chatproxy.logs import setup_logging
    from chatproxy.redact import Redactor

    redactor = Redactor(settings.secrets())
    setup_logging(settings.log_level, settings.log_format, redactor)
    app = create_app(settings, redactor=redactor)
    app.on_startup.append(settle_gc)

    def announce() -> None:
        log.info("listening on http://%s:%d", settings.host, settings.port)
        if on_listening is not None:
            on_listening()

    server.serve(app, settings, loop=new_loop(), announce=announce, reuse_port=reuse_port)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "chat":
        from chatproxy.terminal import ChatOptions
        from chatproxy.terminal import main as chat

        options = ChatOptions(args.url, args.provider, args.model, args.api_key, args.conversation)
        sys.exit(chat(options))
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        sys.exit(f"chatproxy: invalid configuration: {problems}")
    if settings.workers > 1:
        from chatproxy.workers import supervise

        sys.exit(supervise(settings))
    serve(settings)


if __name__ == "__main__":
    main()
