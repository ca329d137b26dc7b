"""Process helpers shared by the benchmarks: start servers, read their CPU and memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_http(url: str, timeout: float = 30.0) -> float:
    """Seconds until `url` answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.005)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, *, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`args` running until the block ends; its output to `log`, or nowhere."""
    with log.open("wb") if log is not None else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            args,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_script(name: str, port: int, *args: str) -> list[str]:
    """The command line of one of bench/'s servers, listening on `port`."""
    return [sys.executable, str(ROOT / "bench" / name), "--port", str(port), *args]


@contextmanager
def mock_upstream(chunks: int = 20, gap: float = 0.0) -> Iterator[tuple[str, int]]:
    port = free_port()
    with process(
        bench_script("mock_upstream.py", port, "--chunks", str(chunks), "--gap", str(gap))
    ) as proc:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        yield f"http://127.0.0.1:{port}/v1", proc.pid


@contextmanager
def passthrough(upstream: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    with process(
        bench_script("passthrough.py", port, "--upstream", f"{upstream}/chat/completions")
    ) as proc:
        wait_http_post(f"http://127.0.0.1:{port}/chatgpt/")
        yield f"http://127.0.0.1:{port}", proc.pid


def wait_http_post(url: str, timeout: float = 30.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            request = urllib.request.Request(url, data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.01)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


@contextmanager
def chatproxy(upstream: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    """A chatproxy process in front of `upstream`; yields its URL, process and start-up time."""
    port = free_port()
    settings = {
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": upstream,
        "LOG_LEVEL": "INFO",
        **env,
    }
    started = time.monotonic()
    with process(
        [sys.executable, "-m", "chatproxy", "--port", str(port), "--env-file", os.devnull],
        env=settings,
    ) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        yield url, proc, time.monotonic() - started
