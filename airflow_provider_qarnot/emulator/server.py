"""``Emulator``: the whole service (API on uvicorn + moto S3) in background threads of this process.

Usable as a context manager in tests; the CLI (``cli.py``) runs the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from .app import build_app
from .faults import FaultInjector, FaultRule
from .models import FINAL_STATES, Backend, BackendConfig
from .responses import RequestStats, ServiceContext, render_task
from .runner import ProcessRunner, Scheduler, Simulator
from .storage import BucketStorage, S3Server
from .store import StateStore

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "emulator-token"
DEFAULT_EMAIL = "emulator@qarnot.local"
MODES = ("run", "simulate")
OUTCOMES = ("success", "failure")


class _ApiServer(uvicorn.Server):
    """uvicorn's server, woken at once by :meth:`request_exit` instead of at its next 0.1 s tick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    def request_exit(self) -> None:
        """Stop serving now; in-flight requests and idle keep-alive connections are not waited for."""
        self.should_exit = True
        self.force_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(self._wake.set)


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback name or address?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Emulator:
    """A local Qarnot: REST API + S3 storage, running task commands on this host (``mode="run"``)
    or only simulating their timeline (``mode="simulate"``).

    >>> with Emulator(token="tok") as emu:  # doctest: +SKIP
    ...     requests.get(emu.api_url + "/settings", headers={"Authorization": emu.token})
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        cores: int = 2,
        mode: str = "run",
        state_dir: str | os.PathLike[str] | None = None,
        max_tasks: int | None = None,
        sim_duration: float = 1.0,
        sim_outcome: str = "success",
        seed: int = 0,
        faults: list[FaultRule] | None = None,
        credits_exhausted: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        email: str = DEFAULT_EMAIL,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if sim_outcome not in OUTCOMES:
            raise ValueError(f"sim_outcome must be one of {OUTCOMES}, not {sim_outcome!r}")
        if cores < 1:
            raise ValueError("cores must be at least 1")
        if max_tasks is not None and max_tasks < 0:
            raise ValueError("max_tasks must not be negative")
        if sim_duration < 0:
            raise ValueError("sim_duration must not be negative")
        if not is_loopback(host):
            warnings.warn(
                f"The Qarnot emulator is binding {host}, which is not loopback: anyone who can reach it and knows "
                "the token can run commands on this host.",
                stacklevel=2,
            )
        self.token = token or os.environ.get("QARNOT_CLIENT_TOKEN") or DEFAULT_TOKEN
        self.email = email
        self.cores = cores
        self.mode = mode
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.max_tasks = max_tasks
        self.sim_duration = sim_duration
        self.sim_outcome = sim_outcome
        self.seed = seed
        self.host = host
        self.port = port
        self.storage_port = storage_port
        self._initial_faults = list(faults or [])
        self._initial_credits_exhausted = credits_exhausted
        self._started = False
        self._stop_lock = threading.Lock()
        self._s3: S3Server | None = None
        self._storage: BucketStorage | None = None
        self._store: StateStore | None = None
        self._scheduler: Scheduler | None = None
        self._executor: ProcessRunner | Simulator | None = None
        self._server: _ApiServer | None = None
        self._thread: threading.Thread | None = None
        self._work_root: Path | None = None
        self.backend: Backend | None = None
        self.context: ServiceContext | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self._url_host}:{self.port}"

    @property
    def storage_url(self) -> str:
        """``http://127.0.0.1:SPORT``: the S3 endpoint (access key = :attr:`email`, secret = :attr:`token`)."""
        return f"http://{self._url_host}:{self.storage_port}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Emulator:
        """Start storage, model, executor and the HTTP server; returns ``self``."""
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._s3 = S3Server(self.host, self.storage_port)
        self._s3.start()
        self.storage_port = self._s3.port
        self._storage = BucketStorage(self.storage_url, self.email, self.token)
        saved: dict[str, list[dict[str, Any]]] = {"task": [], "job": [], "pool": []}
        if self.state_dir is not None:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds task data: owner only
            restored = self._storage.restore(self.state_dir / "s3")
            log.info("restored %d objects from %s", restored, self.state_dir)
            self._store = StateStore(self.state_dir)
            saved = self._store.load()
        self._scheduler = Scheduler()
        self._scheduler.start()
        config = BackendConfig(
            mode=self.mode,
            cores=self.cores,
            max_tasks=self.max_tasks,
            sim_duration=self.sim_duration,
            sim_outcome=self.sim_outcome,
            email=self.email,
        )
        self.backend = Backend(config, self._storage, self._scheduler, self._store.mark if self._store else None)
        self.backend.credits_exhausted = self._initial_credits_exhausted
        self._work_root = Path(tempfile.mkdtemp(prefix="qarnot-emulator-"))
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        if self.mode == "simulate":
            self._executor = Simulator(self.backend, self._scheduler, self.sim_duration, self.sim_outcome)
        else:
            credentials = {
                "QARNOT_CLUSTER_URL": self.api_url,
                "QARNOT_CLIENT_TOKEN": self.token,
                "QARNOT_STORAGE_URL": self.storage_url,
                "QARNOT_ACCOUNT_EMAIL": self.email,
            }
            self._executor = ProcessRunner(self.backend, self._storage, self.cores, self._work_root, credentials)
        self.backend.executor = self._executor
        self.backend.restore(saved["task"], saved["job"], saved["pool"])
        if self._store is not None:
            self._store.start(self.backend.lock, self.backend.snapshot_state)
        faults = FaultInjector(self.seed)
        faults.set_rules(self._initial_faults)
        self.context = ServiceContext(
            backend=self.backend,
            token=self.token,
            email=self.email,
            storage_url=self.storage_url,
            faults=faults,
            stats=RequestStats(),
            api_url=self.api_url,
            reset_hook=self._reset_storage,
        )
        self.backend.resume_all()
        config_uv = uvicorn.Config(
            build_app(self.context),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        self._server = _ApiServer(config_uv)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="qarnot-emulator-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the emulator's HTTP server failed to start")
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator's HTTP server did not start within 30 s")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop serving, kill task processes, save state (``state_dir``), stop storage. Idempotent."""
        with self._stop_lock:
            if not self._started:
                return
            self._started = False
            if self._server is not None:
                self._server.request_exit()
            if self._thread is not None:
                self._thread.join(timeout=10)
            if self.backend is not None:
                with self.backend.lock:
                    self.backend.shutting_down = True
            if self._executor is not None:
                self._executor.stop()
            if self._scheduler is not None:
                self._scheduler.stop()
            if self._store is not None:
                try:
                    self._store.close()
                except Exception:
                    log.exception("saving the emulator state failed")
            if self.state_dir is not None and self._storage is not None:
                try:
                    self._storage.dump(self.state_dir / "s3")
                except Exception:
                    log.exception("saving the emulator buckets failed")
            if self._s3 is not None:
                self._s3.stop()
            if self._work_root is not None:
                shutil.rmtree(self._work_root, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ control and inspection

    def _ctx(self) -> ServiceContext:
        if self.context is None:
            raise RuntimeError("the emulator is not started")
        return self.context

    def set_faults(self, rules: list[FaultRule], seed: int | None = None) -> None:
        """Replace the fault rules (re-seeding the random source when ``seed`` is given)."""
        self._ctx().faults.set_rules(rules, seed)

    def clear_faults(self) -> None:
        """No more faults."""
        self._ctx().faults.clear()

    def set_credits_exhausted(self, exhausted: bool = True) -> None:
        """Make task/pool submission answer 402 Not enough credits (or stop doing so)."""
        self._ctx().backend.credits_exhausted = exhausted

    def stats(self) -> dict[str, Any]:
        """``{"requests": {"GET /tasks/{uuid}": n, ...}, "requests_total", "faults_injected", "faults", "tasks"}``."""
        return self._ctx().stats_dict()

    def tasks(self) -> list[dict[str, Any]]:
        """Every task as ``GET /tasks`` returns it."""
        ctx = self._ctx()
        tasks = ctx.backend.list_tasks()
        now = time.time()
        with ctx.backend.lock:
            return [render_task(t, now, ctx.backend) for t in tasks]

    def task(self, uuid: str) -> dict[str, Any]:
        """One task as ``GET /tasks/{uuid}`` returns it (raises ``NotFound``)."""
        ctx = self._ctx()
        with ctx.backend.lock:
            return render_task(ctx.backend.get_task(uuid), time.time(), ctx.backend)

    def wait_for_task(self, uuid: str, timeout: float = 30.0, states: frozenset[str] = FINAL_STATES) -> dict[str, Any]:
        """Poll (in-process) until the task is in one of ``states``; raises ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.task(uuid)
            if data["state"] in states:
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {uuid} still {data['state']} after {timeout} s")
            time.sleep(0.02)

    def reset(self, storage: bool = False) -> None:
        """Forget tasks, jobs, pools, faults and counters (and every bucket with ``storage=True``)."""
        ctx = self._ctx()
        ctx.backend.reset()
        ctx.backend.credits_exhausted = False
        ctx.faults.clear()
        ctx.faults.reset_counts()
        ctx.stats.reset()
        if storage:
            self._reset_storage()

    def _reset_storage(self) -> None:
        if self._s3 is not None:
            self._s3.reset()

    def running_pids(self) -> list[int]:
        """Process ids of the task instances running now (run mode)."""
        if isinstance(self._executor, ProcessRunner):
            return self._executor.running_pids()
        return []

    def s3_client(self) -> Any:
        """A boto3 S3 client for the emulator's storage."""
        if self._storage is None:
            raise RuntimeError("the emulator is not started")
        return self._storage.client
