"""`--workers N`: N serving processes on one port, so one machine's cores serve without a
gateway in front.

The parent binds nothing and serves nothing: it starts N children (multiprocessing's
spawn, each a fresh interpreter running the ordinary server with SO_REUSEPORT, so the
kernel spreads new connections over their listeners), forwards SIGTERM, SIGINT and SIGHUP
to them, waits for their drains, and replaces a child that dies on its own, waiting longer
after each quick death. Children run in a process group of their own: Ctrl-C in a terminal
reaches the parent alone, which forwards it once (a second signal would cut the drain).

With more than one child, /metrics must add up every process's counters: each child gets
PROMETHEUS_MULTIPROC_DIR, a fresh directory that the parent removes at exit (one the
operator set is kept, less the live gauges of processes that died unseen).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType

from chatproxy.config import Settings

log = logging.getLogger("chatproxy.workers")
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Seconds every child has to start listening at start-up before the parent gives up.
START_TIMEOUT = 60.0
# A replaced child waits this long, doubled after each child that died young, up to the cap.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
# A child that served this long died of something new: its replacement starts at once.
STABLE_AFTER = 30.0
# How often the parent looks at its children while nothing happens.
POLL = 0.5
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# A child's exit codes after a stop: drained, or ended by the signal before its handler
# was installed (it was still starting; nothing was in flight).
STOPPED_CLEANLY = (0, -signal.SIGTERM, -signal.SIGINT)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkersError(SystemExit):
    """A configuration `--workers` cannot serve; said before anything starts."""

    def __init__(self, message: str) -> None:
        super().__init__(f"chatproxy: {message}")


def check(settings: Settings) -> None:
    """Refuse what N processes cannot do, before any of them starts."""
    if settings.workers <= 1:
        return
    if settings.local_model:
        raise WorkersError(
            f"WORKERS={settings.workers} cannot serve LOCAL_MODEL: the model lives in one "
            "process and would be loaded once per worker. Run one worker, or serve the "
            "model with vLLM or TGI and point OPENAI_BASE_URL at it."
        )
    store = settings.history_store.get_secret_value() if settings.history_store else ""
    if store.startswith("memory:"):
        raise WorkersError(
            f"WORKERS={settings.workers} cannot share HISTORY_STORE=memory://: each worker "
            "would keep conversations of its own. Use sqlite:///path.db, postgresql://… or "
            "redis://…, or one worker."
        )
    if settings.port == 0:
        raise WorkersError(
            f"WORKERS={settings.workers} needs a fixed PORT: with 0 each worker would "
            "listen on a port of its own"
        )


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the parent dies, so a killed parent leaves no
    servers behind holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def still_parented(parent: int) -> bool:
    """Whether `parent` is still this process's parent. Checked after PR_SET_PDEATHSIG,
    which fires only for a parent dying later: one that died while this child started
    left it to init already."""
    return os.getppid() == parent


def child_main(settings: Settings, index: int, ready: Connection, parent: int) -> None:
    """One worker: the ordinary server, on the shared port; says so through `ready`."""
    # Born with SIGHUP blocked (`Supervisor.start`): ignored from here until the server
    # handles it as a reload, so a reload forwarded while this child starts cannot end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    os.setpgid(0, 0)  # the terminal's Ctrl-C goes to the parent, which forwards it once
    _die_with_parent()
    if not still_parented(parent):
        log.error("worker %d: the supervisor (pid %d) is gone; not starting", index, parent)
        return
    from chatproxy.__main__ import serve

    def listening() -> None:
        log.info("worker %d (pid %d) is listening", index, os.getpid())
        with contextlib.suppress(OSError):  # a replacement's parent does not wait to hear
            ready.send(os.getpid())
        ready.close()

    serve(settings, reuse_port=True, on_listening=listening)


@dataclass
class Slot:
    """One worker's place: its current process, and when to start the next after a death."""

    index: int
    process: SpawnProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    settings: Settings
    slots: list[Slot] = field(default_factory=list)
    stopping: bool = False
    failed: bool = False

    def __post_init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.slots = [Slot(index) for index in range(1, self.settings.workers + 1)]

    def start(self, slot: Slot) -> Connection:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=child_main,
            args=(self.settings, slot.index, sender, os.getpid()),
            name=f"chatproxy-worker-{slot.index}",
        )
        # A signal mask survives fork and exec: the child starts with SIGHUP blocked (held
        # pending, not acted on) until it ignores it; ours, held meanwhile, is forwarded after.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        sender.close()  # the child holds its own copy; EOF here then means it died
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None
        # A stop signal handled while this child was being started (`forward` did not see
        # it yet) must still reach it; from here on, `forward` does.
        if self.stopping and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        return receiver

    def forward(self, signum: int, frame: FrameType | None = None) -> None:
        if signum != signal.SIGHUP and not self.stopping:
            self.stopping = True
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.slots))
        for slot in self.slots:
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signum)

    def start_all(self) -> bool:
        """Start every child and wait until each listens; False if one never does."""
        pending: dict[Connection, Slot] = {}
        for slot in self.slots:
            if self.stopping:  # stopped while starting: the rest need not start at all
                break
            pending[self.start(slot)] = slot
        try:
            return self._await_listening(pending)
        finally:
            for receiver in pending:
                receiver.close()

    def _await_listening(self, pending: dict[Connection, Slot]) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while pending and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("workers did not start listening within %g s", START_TIMEOUT)
                return False
            for receiver in wait(list(pending), timeout=min(left, POLL)):
                assert isinstance(receiver, Connection)
                slot = pending.pop(receiver)
                try:
                    receiver.recv()
                except EOFError:
                    code = None
                    if slot.process is not None:
                        slot.process.join(1)
                        code = slot.process.exitcode
                    log.error("worker %d exited (code %s) before it listened", slot.index, code)
                    return False
                finally:
                    receiver.close()
        return True

    def reap(self) -> None:
        """Notice children that ended; schedule the replacement of those that died."""
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is None or process.is_alive():
                continue
            process.join()
            code, pid = process.exitcode, process.pid
            slot.process = None
            process.close()
            forget_metrics(pid)
            if self.stopping:
                if code not in STOPPED_CLEANLY:
                    log.warning("worker %d (pid %s) ended with code %s", slot.index, pid, code)
                    self.failed = True
                continue
            lived = now - slot.started
            slot.quick_deaths = 0 if lived >= STABLE_AFTER else slot.quick_deaths + 1
            delay = min(RESTART_DELAY * 2 ** max(slot.quick_deaths - 1, 0), RESTART_DELAY_MAX)
            if slot.quick_deaths == 0:
                delay = 0.0
            slot.restart_at = now + delay
            log.error(
                "worker %d (pid %s) died (code %s) after %.1f s; replacing it in %.1f s",
                slot.index,
                pid,
                code,
                lived,
                delay,
            )

    def restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                self.start(slot).close()  # a replacement is not waited for; it logs its start

    def alive(self) -> list[SpawnProcess]:
        return [slot.process for slot in self.slots if slot.process is not None]

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self.forward) for signum in FORWARDED}
        try:
            if not self.start_all():
                self.failed = True
                self.forward(signal.SIGTERM)
            while self.alive() or (not self.stopping and not self.failed):
                sentinels = [process.sentinel for process in self.alive()]
                if sentinels:
                    wait(sentinels, timeout=POLL)
                else:
                    time.sleep(POLL)
                self.reap()
                if not self.stopping:
                    self.restart_due()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 1 if self.failed else 0


def forget_metrics(pid: int | None) -> None:
    """A dead child's live gauges leave /metrics' sums (prometheus-client's advice)."""
    if pid is None or METRICS_DIR_VARIABLE not in os.environ:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def forget_dead_processes(folder: str) -> None:
    """A folder the operator keeps between runs may hold live gauges of processes that died
    unseen (with a parent killed outright): they leave the sums before anything starts."""
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(int(pid), folder)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def supervise(settings: Settings) -> int:
    """Serve with `settings.workers` processes until a signal; the exit status."""
    check(settings)
    from chatproxy.logs import setup_logging
    from chatproxy.redact import Redactor

    setup_logging(settings.log_level, settings.log_format, Redactor(settings.secrets()))
    own_dir = None
    if METRICS_DIR_VARIABLE not in os.environ:
        own_dir = tempfile.mkdtemp(prefix="chatproxy-metrics-")
        os.environ[METRICS_DIR_VARIABLE] = own_dir  # spawned children inherit it
    else:
        forget_dead_processes(os.environ[METRICS_DIR_VARIABLE])
    log.info(
        "starting %d workers on http://%s:%d (pid %d supervises)",
        settings.workers,
        settings.host,
        settings.port,
        os.getpid(),
    )
    try:
        return Supervisor(settings).run()
    finally:
        if own_dir is not None:
            os.environ.pop(METRICS_DIR_VARIABLE, None)
            shutil.rmtree(own_dir, ignore_errors=True)
