"""`make demo-cluster`: nginx in front of two chatproxy copies sharing PostgreSQL history,
answered by a fake upstream, all on loopback, until Ctrl-C.

nginx runs deploy/nginx.conf itself, with only its `listen` line and the upstream's
`server` lines rewritten (`gateway_config`), so what the demo and tests/test_cluster.py
exercise is the file users copy. tests/test_cluster.py drives the same `Cluster`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.common import ROOT, bench_script, free_port, wait_http

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
DEMO_KEY = "sk-demo-not-a-real-key"
POSTGRES = os.environ.get(
    "CHATPROXY_DEMO_POSTGRES", "postgresql://postgres@localhost:5432/postgres"
)
LISTEN = re.compile(r"^(\s*)listen 127\.0\.0\.1:\d+;$", re.M)
# The upstream's `server` lines: the first becomes one line per copy, the rest go.
UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+( [^;\n]*)?;\n", re.M)
LOOPBACK = ("-c", "listen_addresses=127.0.0.1")
# How long a process has to stop after SIGTERM before it is killed.
STOP_WAIT = 15.0


def gateway_config(template: str, listen_port: int, copy_ports: list[int]) -> str:
    """deploy/nginx.conf listening on `listen_port`, in front of the copies on `copy_ports`."""
    if len(LISTEN.findall(template)) != 1 or not UPSTREAM_SERVER.search(template):
        raise ValueError(f"{NGINX_CONF} no longer has one `listen` line and `server` lines")
    text = LISTEN.sub(rf"\1listen 127.0.0.1:{listen_port};", template)
    first = UPSTREAM_SERVER.search(text)
    assert first is not None
    indent, options = first.group(1), first.group(2) or ""
    lines = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in copy_ports)
    text = UPSTREAM_SERVER.sub("", text)
    return text[: first.start()] + lines + text[first.start() :]


def find_nginx() -> str | None:
    """nginx's path; Debian puts it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def stop(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    """Signal `proc` and wait for it; killed when it outlasts STOP_WAIT."""
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            return proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


@dataclass
class Copy:
    """One chatproxy copy: its port, process and log file."""

    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """The fake upstream, the copies and nginx, started by `start` and ended by `stop`.

    Every process gets a session of its own, so a terminal's Ctrl-C reaches this process
    alone, which then stops the others in order: nginx, the copies (drained), the fake.
    """

    workdir: Path
    history_store: str
    copies: int = 2
    gateway_port: int = 0
    # The fake's streams: this many chunks, this many seconds apart.
    chunks: int = 20
    gap: float = 0.05
    shutdown_timeout: float = 30.0
    members: list[Copy] = field(default_factory=list)
    upstream: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.gateway_port = self.gateway_port or free_port()
        self.upstream_port = free_port()
        self.members = [
            Copy(f"copy-{n}", free_port(), self.workdir / f"copy-{n}.log")
            for n in range(1, self.copies + 1)
        ]
        # nginx's workers run as `nobody` when it is started as root: its prefix must be
        # a folder they may enter, which pytest's and mkdtemp's private folders are not.
        self.prefix = Path(tempfile.mkdtemp(prefix="chatproxy-gateway-"))
        self.prefix.chmod(0o755)
        (self.prefix / "logs").mkdir()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    def _spawn(self, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                args,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )

    def start_copy(self, copy: Copy) -> None:
        env = {
            "OPENAI_API_KEY": DEMO_KEY,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
            "HISTORY_STORE": self.history_store,
            "TRUSTED_PROXIES": "127.0.0.1",
            "SHUTDOWN_TIMEOUT": str(self.shutdown_timeout),
            "LOG_LEVEL": "INFO",
        }
        # --env-file /dev/null: a developer's .env must not change what the demo runs.
        args = [sys.executable, "-m", "chatproxy", "--port", str(copy.port)]
        copy.process = self._spawn([*args, "--env-file", os.devnull], copy.log, env)

    def start(self) -> None:
        nginx = find_nginx()
        if nginx is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
        script = bench_script(
            "mock_upstream.py",
            self.upstream_port,
            "--chunks",
            str(self.chunks),
            "--gap",
            str(self.gap),
        )
        self.upstream = self._spawn(script, self.workdir / "upstream.log", {})
        for copy in self.members:
            self.start_copy(copy)
        wait_http(f"http://127.0.0.1:{self.upstream_port}/v1/models")
        for copy in self.members:
            wait_http(f"{copy.url}/ready")
        config = self.prefix / "nginx.conf"
        config.write_text(
            gateway_config(
                NGINX_CONF.read_text(), self.gateway_port, [c.port for c in self.members]
            )
        )
        command = [nginx, "-p", str(self.prefix), "-e", "logs/error.log", "-c", str(config)]
        self.gateway = self._spawn(
            [*command, "-g", "daemon off;"], self.prefix / "logs" / "nginx.out", {}
        )
        wait_http(f"{self.url}/health")

    def stop(self) -> None:
        """Everything down, whatever state it is in: safe to call twice."""
        if self.gateway is not None:
            stop(self.gateway, signal.SIGQUIT)  # nginx's graceful stop
        for copy in self.members:
            if copy.process is not None:
                stop(copy.process)
        if self.upstream is not None:
            stop(self.upstream)
        shutil.rmtree(self.prefix, ignore_errors=True)


@contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def answers(server: str) -> bool:
    try:
        asyncio.run(_admin(server, "SELECT 1"))
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    return True


def find_initdb() -> Path | None:
    """Debian keeps PostgreSQL's server programs off PATH, one folder per version."""
    found = shutil.which("initdb")
    if found:
        return Path(found)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    return versions[-1] if versions else None


@contextmanager
def private_postgres(workdir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL server of this user's, on loopback, for when none runs."""
    initdb = find_initdb()
    if initdb is None or os.geteuid() == 0:
        raise SystemExit(
            f"PostgreSQL at {POSTGRES} does not answer and none can be started here "
            "(initdb is missing, or refuses root); start one (as root: bash .ci/services) "
            "or point CHATPROXY_DEMO_POSTGRES at one"
        )
    data, port = workdir / "pgdata", free_port()
    subprocess.run(
        [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    with (workdir / "postgres.log").open("ab") as out:
        server = subprocess.Popen(
            [initdb.parent / "postgres", "-D", data, "-p", str(port), "-k", workdir, *LOOPBACK],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 30
        while not answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"PostgreSQL did not start; see {workdir / 'postgres.log'}")
            time.sleep(0.2)
        yield url
    finally:
        stop(server, signal.SIGINT)  # PostgreSQL's fast shutdown


@contextmanager
def demo_database(workdir: Path) -> Iterator[str]:
    """A database of its own on the PostgreSQL at CHATPROXY_DEMO_POSTGRES (or on one
    started for the demo when that does not answer), dropped at the end."""
    name = f"chatproxy_demo_{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        server = POSTGRES
        if not answers(server):
            print(f"PostgreSQL at {POSTGRES} does not answer: starting one for the demo")
            server = stack.enter_context(private_postgres(workdir))
        asyncio.run(_admin(server, f"CREATE DATABASE {name}"))
        try:
            yield f"{server.rpartition('/')[0]}/{name}"
        finally:
            asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def demo(workdir: Path, port: int, copies: int) -> None:
    with demo_database(workdir) as database:
        cluster = Cluster(workdir, database, copies=copies, gateway_port=port, gap=0.1)
        with running(cluster):
            print(f"Open {cluster.url}/ in a browser (nginx, round robin over the copies).")
            for copy in cluster.members:
                print(f"  {copy.name}: {copy.url}  log: {copy.log}")
            print(f"  nginx access log: {cluster.access_log}")
            print(f"  history: PostgreSQL database {database.rpartition('/')[2]}")
            print("  the upstream is a fake: every answer is 'Hello from the mock!'")
            print("Ctrl-C stops everything (and removes the logs).", flush=True)
            try:
                while True:
                    time.sleep(3600)
            finally:
                print("\nstopping: nginx, then the copies (drained), then the fake upstream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="nginx's port (default 8000)")
    parser.add_argument("--copies", type=int, default=2)
    args = parser.parse_args()
    # SIGTERM ends the demo as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    workdir = Path(tempfile.mkdtemp(prefix="chatproxy-demo-"))
    try:
        demo(workdir, args.port, args.copies)
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
