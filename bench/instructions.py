"""Instructions per request through chatproxy and through a bare pass-through, by callgrind.

CPU time per request swings by a third on a shared VM; instruction counts do not, so this
is the benchmark to compare two versions of the hot path with. Each server runs under
`valgrind --tool=callgrind` with instrumentation switched on only after start-up and a
warm-up; then `--requests` sequential requests go through it to the same mock upstream.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import ROOT, bench_script, free_port, mock_upstream, wait_http

BODY = json.dumps({"messages": [{"role": "user", "content": "Привет! How are you today?"}]})


def post(url: str, count: int) -> None:
    data = BODY.encode()
    for _ in range(count):
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()


def instructions_per_request(
    command: list[str], env: dict[str, str], port: int, requests: int
) -> float:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                *command,
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/chatgpt/"
            deadline = time.monotonic() + 120
            while True:
                try:
                    post(url, 1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            post(url, 20)  # warm up
            subprocess.run(
                ["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True
            )
            post(url, requests)
            subprocess.run(
                ["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True
            )
            subprocess.run(
                ["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True
            )
        finally:
            proc.terminate()
            proc.wait(30)
        dumps = sorted(Path(folder).glob("callgrind.out.*"))
        text = dumps[0].read_text(errors="replace")
        totals = re.search(r"^totals:\s*(\d+)", text, re.M)
        assert totals, "no totals in the callgrind dump"
        return int(totals.group(1)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="chatproxy's LOG_LEVEL (INFO logs one access line per request)",
    )
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with mock_upstream() as (upstream, _):
        wait_http(f"{upstream}/models")
        bare_port, proxy_port = free_port(), free_port()
        bare = instructions_per_request(
            bench_script("passthrough.py", bare_port, "--upstream", f"{upstream}/chat/completions"),
            {},
            bare_port,
            args.requests,
        )
        proxy = instructions_per_request(
            [
                sys.executable,
                "-m",
                "chatproxy",
                "--port",
                str(proxy_port),
                "--env-file",
                os.devnull,
            ],
            {
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": upstream,
                "LOG_LEVEL": args.log_level,
            },
            proxy_port,
            args.requests,
        )
    print(f"instructions per request, {args.requests} sequential requests on /chatgpt/:")
    print(f"  bare aiohttp pass-through: {bare:12,.0f}")
    print(f"  chatproxy, LOG_LEVEL={args.log_level:7}: {proxy:12,.0f}  ({proxy / bare:.2f}x bare)")


if __name__ == "__main__":
    main()
