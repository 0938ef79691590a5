"""Executors: ``ProcessRunner`` really runs instances as host processes (``--mode run``),
``Simulator`` only plays their timeline (``--mode simulate``); ``Scheduler`` is the one timer thread.

At most ``cores`` instances run at once (one thread each); a simulated task needs no thread at all:
its four transitions are timers on the scheduler.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .buffers import LineJoiner
from .models import DISPATCHED, DONE, EXECUTING, UPLOADING, Backend, Snapshot, Task
from .storage import BucketStorage

log = logging.getLogger(__name__)

ENV_NAME_RE = re.compile(r"^[^=\0]+$")
#: Variables of the emulator's own environment that never reach a task (API tokens, cloud credentials).
PRIVATE_ENV_PREFIXES = ("QARNOT_", "AWS_")
#: Every instance gets a variable ``<prefix><random hex>=1``: its processes, even those that left its process
#: group (``setsid``), are found in ``/proc/*/environ`` and killed with it. Not ``QARNOT_*``: an emulator run
#: inside a task keeps its parent's marks.
MARK_PREFIX = "EMULATOR_INSTANCE_MARK_"
#: Timers further away than this (about 31 years) wait at this horizon: they never fire in practice, and
#: bigger delays would overflow the clock arithmetic.
TIMER_HORIZON = 1e9
#: Longest single sleep of the timer thread (``threading`` refuses timeouts beyond ``TIMEOUT_MAX``).
_MAX_TIMER_WAIT = 3600.0


class TimerHandle:
    """A scheduled callback that can be cancelled."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run it."""
        self.cancelled = True


class Scheduler:
    """One thread running callbacks at given times (monotonic clock)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="qarnot-emulator-scheduler", daemon=True)

    def start(self) -> None:
        """Start the timer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; pending callbacks are dropped."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds (clamped to [0, :data:`TIMER_HORIZON`]: never raises)."""
        handle = TimerHandle(callback)
        due = time.monotonic() + float(min(max(0.0, delay), TIMER_HORIZON))
        with self._cond:
            if not self._stopped:
                heapq.heappush(self._heap, (due, next(self._counter), handle))
                self._cond.notify()
        return handle

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay > 0:
                        self._cond.wait(min(delay, _MAX_TIMER_WAIT))
                        continue
                    break
                if self._stopped:
                    return
                _, _, handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                try:
                    handle.callback()
                except Exception:
                    log.exception("scheduled callback failed")


class Simulator:
    """Plays each task's timeline without running anything (``--mode simulate``).

    A task lasts ``d`` = ``EMULATOR_DURATION_S`` (constant) or the default duration. It is Submitted until
    ``min(0.1 d, 1 s)``, FullyDispatched until ``min(0.2 d, 2 s)``, FullyExecuting until ``d - min(0.1 d, 1 s)``,
    UploadingResults until ``d``, then ends with ``EMULATOR_OUTCOME`` (constant) or the default outcome.
    Cores and pool slots are ignored.
    """

    def __init__(self, backend: Backend, scheduler: Scheduler, duration: float, outcome: str) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.duration = duration
        self.outcome = outcome
        self._handles: dict[str, list[TimerHandle]] = {}

    def _task_duration(self, task: Task) -> float:
        raw = task.constant("EMULATOR_DURATION_S")
        if raw is not None:
            try:
                value = float(raw)
                if value == value and value != float("inf"):
                    return max(0.0, value)
            except ValueError:
                pass
        return self.duration

    def _task_outcome(self, task: Task) -> str:
        raw = (task.constant("EMULATOR_OUTCOME") or "").strip().lower()
        return raw if raw in ("success", "failure") else self.outcome

    def enqueue(self, task: Task) -> None:
        """Schedule the task's four transitions."""
        duration = self._task_duration(task)
        outcome = self._task_outcome(task)
        task.sim_duration = duration
        uuid = task.uuid
        steps: list[tuple[float, str]] = [
            (min(0.1 * duration, 1.0), DISPATCHED),
            (min(0.2 * duration, 2.0), EXECUTING),
            (duration - min(0.1 * duration, 1.0), UPLOADING),
            (duration, DONE),
        ]

        def make(phase: str) -> Callable[[], None]:
            def fire() -> None:
                self.backend.sim_phase(uuid, phase, outcome)
                if phase == DONE:
                    with self.backend.lock:
                        self._handles.pop(uuid, None)

            return fire

        self._handles[uuid] = [self.scheduler.call_later(delay, make(phase)) for delay, phase in steps]

    def cancel(self, task: Task) -> list[int]:
        """Drop the timers; every unfinished instance ends now."""
        for handle in self._handles.pop(task.uuid, []):
            handle.cancel()
        return [i.instance_id for i in task.unfinished()]

    def snapshot(self, task: Task, snap: Snapshot) -> None:
        """Nothing to upload in simulate mode."""
        self.backend.snapshot_result(snap, "Success", 0, 0, [])

    def update_resources(self, task: Task) -> None:
        """Nothing to sync in simulate mode."""

    def stop(self) -> None:
        """Drop every timer."""
        with self.backend.lock:
            for handles in self._handles.values():
                for handle in handles:
                    handle.cancel()
            self._handles.clear()


@dataclass
class _TaskRun:
    """What the runner needs of a task, captured when it is enqueued."""

    uuid: str
    command: str | None
    env: dict[str, str]
    resources: list[tuple[str, str | None, str | None]]
    result_bucket: str | None
    results_prefix: str
    whitelist: str | None
    blacklist: str | None
    pool_uuid: str | None
    pool_slots: int
    cache_dir: Path
    cache_lock: threading.Lock = field(default_factory=threading.Lock)
    cache_ready: bool = False


@dataclass
class _Slot:
    """A running instance. ``proc`` is its current attempt's process, set only until that is reaped
    (under the runner lock), so a kill never targets a pid the system may have given to someone else."""

    task_uuid: str
    instance_id: int
    pool_uuid: str | None
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    baseline: dict[str, tuple[int, int]] = field(default_factory=dict)
    mark: str = field(default_factory=lambda: MARK_PREFIX + secrets.token_hex(12))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of an attempt whose leader is not reaped yet (its pid is still ours)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _carries(pid: int, wanted: tuple[bytes, ...]) -> bool:
    """Does the process's environment hold one of the ``NAME=`` prefixes in ``wanted``?"""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return any(data.startswith(w) or b"\0" + w in data for w in wanted)


def _kill_marked(marks: Collection[str]) -> int:
    """SIGKILL every process carrying one of the instance ``marks`` (Linux ``/proc``), in rounds until no
    new one appears (they may be forking); returns how many were signalled.

    The process is pinned with a pidfd before its environment is read, so a pid reused meanwhile is
    never signalled.
    """
    if not marks or not os.path.isdir("/proc"):
        return 0
    wanted = tuple(f"{mark}=".encode() for mark in marks)
    signalled: set[int] = set()
    me = os.getpid()
    for _round in range(20):
        found = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in signalled or int(name) == me:
                continue
            pid = int(name)
            try:
                pidfd: int | None = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            except OSError:  # no pidfd (old kernel): signal the pid right after checking it
                pidfd = None
            try:
                if _carries(pid, wanted):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        if pidfd is None:
                            os.kill(pid, signal.SIGKILL)
                        else:
                            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    signalled.add(pid)
                    found += 1
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        if not found:
            break
    return len(signalled)


def _wait_exited(proc: subprocess.Popen[bytes], block: bool) -> bool:
    """Has the attempt's process exited? Leaves it unreaped, so its pid (and process group) stay ours."""
    options = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    try:
        return os.waitid(os.P_PID, proc.pid, options) is not None
    except ChildProcessError:  # reaped already
        return True


def _scan(root: Path) -> dict[str, tuple[int, int]]:
    """Regular files under ``root`` (no symlinks) with size and mtime."""
    found: dict[str, tuple[int, int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                stat = path.lstat()
            except OSError:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            found[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def _selected(relative: str, whitelist: str | None, blacklist: str | None) -> bool:
    if whitelist and re.search(whitelist, relative) is None:
        return False
    return not (blacklist and re.search(blacklist, relative) is not None)


class ProcessRunner:
    """Runs each instance's ``DOCKER_CMD`` with ``sh -c`` in a fresh directory (``--mode run``).

    Instances queue FIFO; at most ``cores`` run at once (and at most a pool's slots for pool tasks).
    Each runs in its own process group and carries a unique environment mark, so abort, the end of its main
    process and shutdown kill everything it started, even processes that called ``setsid``.
    """

    def __init__(
        self,
        backend: Backend,
        storage: BucketStorage | None,
        cores: int,
        work_root: Path,
        credentials_env: dict[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.storage = storage
        self.cores = max(1, cores)
        self.work_root = work_root
        self.credentials_env = credentials_env or {}
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, int]] = deque()
        self._runs: dict[str, _TaskRun] = {}
        self._running: dict[tuple[str, int], _Slot] = {}
        self._cancelled: set[str] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = False

    # -------------------------------------------------------------- executor interface

    def enqueue(self, task: Task) -> None:
        """Queue the task's unfinished instances (backend lock held)."""
        spec = task.spec
        env = {k: v for k, v in task.constants.items() if ENV_NAME_RE.match(k) and "\0" not in v}
        if spec.privileges.get("exportApiAndStorageCredentialsInEnvironment"):
            env.update(self.credentials_env)
        resources = [(b.bucket_name, b.prefix, b.strip_prefix) for b in spec.resource_buckets]
        resources += [(name, None, None) for name in spec.legacy_resource_buckets]
        pool_slots = self.cores
        if spec.pool_uuid is not None and spec.pool_uuid in self.backend.pools:
            pool_slots = self.backend.pools[spec.pool_uuid].spec.slots()
        command = task.constant("DOCKER_CMD")
        run = _TaskRun(
            uuid=task.uuid,
            command=command if command and command.strip() else None,
            env=env,
            resources=resources,
            result_bucket=spec.result_bucket,
            results_prefix=spec.results_bucket_prefix or "",
            whitelist=spec.results_whitelist,
            blacklist=spec.results_blacklist,
            pool_uuid=spec.pool_uuid,
            pool_slots=pool_slots,
            cache_dir=self.work_root / task.uuid / "resources",
        )
        with self._lock:
            self._cancelled.discard(task.uuid)
            self._runs[task.uuid] = run
            for inst in sorted(task.unfinished(), key=lambda i: i.instance_id):
                self._queue.append((task.uuid, inst.instance_id))
        self._pump()

    def cancel(self, task: Task) -> list[int]:
        """Unqueue the task's waiting instances and kill its running ones."""
        with self._lock:
            removed = [iid for (uuid, iid) in self._queue if uuid == task.uuid]
            self._queue = deque(item for item in self._queue if item[0] != task.uuid)
            self._cancelled.add(task.uuid)
            slots = [s for s in self._running.values() if s.task_uuid == task.uuid]
            if not slots:
                self._forget(task.uuid)
            self._kill_groups(slots)
        _kill_marked([s.mark for s in slots])
        return removed

    def snapshot(self, task: Task, snap: Snapshot) -> None:
        """Upload the running instances' new files in the background."""
        threading.Thread(target=self._snapshot, args=(task.uuid, snap), daemon=True).start()

    def update_resources(self, task: Task) -> None:
        """Re-download the resources and add new files to running instances, in the background."""
        threading.Thread(target=self._update_resources, args=(task.uuid,), daemon=True).start()

    def stop(self) -> None:
        """Kill every process this runner started and wait for its threads."""
        with self._lock:
            self._stopping = True
            self._queue.clear()
            slots = list(self._running.values())
            self._kill_groups(slots)
            threads = list(self._threads)
        _kill_marked([s.mark for s in slots])
        deadline = time.monotonic() + 10
        for thread in threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._lock:
            slots = list(self._running.values())
            self._kill_groups(slots)
        _kill_marked([s.mark for s in slots])

    def running_pids(self) -> list[int]:
        """Process ids of the instances running now."""
        with self._lock:
            return [s.proc.pid for s in self._running.values() if s.proc is not None]

    def _kill_groups(self, slots: list[_Slot]) -> None:
        """SIGKILL the process groups of these instances' current attempts (runner lock held)."""
        for slot in slots:
            if slot.proc is not None:
                _kill_group(slot.proc)

    def _end_attempt(self, slot: _Slot) -> None:
        """The attempt's main process exited: kill what it left behind, as a container's end would."""
        if slot.proc is not None:
            _kill_group(slot.proc)
        _kill_marked([slot.mark])

    # -------------------------------------------------------------- scheduling

    def _forget(self, task_uuid: str) -> None:
        """Drop a task's run record and resource cache (runner lock held)."""
        run = self._runs.pop(task_uuid, None)
        if run is not None:
            shutil.rmtree(run.cache_dir.parent, ignore_errors=True)

    def _pump(self) -> None:
        """Start queued instances while slots are free."""
        starts: list[_Slot] = []
        with self._lock:
            if self._stopping:
                return
            per_pool: dict[str, int] = {}
            for slot in self._running.values():
                if slot.pool_uuid is not None:
                    per_pool[slot.pool_uuid] = per_pool.get(slot.pool_uuid, 0) + 1
            skipped: deque[tuple[str, int]] = deque()
            while self._queue and len(self._running) < self.cores:
                item = self._queue.popleft()
                run = self._runs.get(item[0])
                if run is None:
                    continue
                if run.pool_uuid is not None and per_pool.get(run.pool_uuid, 0) >= run.pool_slots:
                    skipped.append(item)
                    continue
                slot = _Slot(item[0], item[1], run.pool_uuid)
                self._running[item] = slot
                if run.pool_uuid is not None:
                    per_pool[run.pool_uuid] = per_pool.get(run.pool_uuid, 0) + 1
                starts.append(slot)
            skipped.extend(self._queue)
            self._queue = skipped
            for slot in starts:
                thread = threading.Thread(
                    target=self._run_instance,
                    args=(slot,),
                    name=f"qarnot-emulator-{slot.task_uuid[:8]}-{slot.instance_id}",
                    daemon=True,
                )
                self._threads.add(thread)
                thread.start()

    # -------------------------------------------------------------- one instance

    def _run_instance(self, slot: _Slot) -> None:
        uuid, iid = slot.task_uuid, slot.instance_id
        try:
            self._run_attempts(slot)
        except Exception as exc:
            log.exception("instance %s/%s crashed in the emulator", uuid, iid)
            if not self._stopping:
                self.backend.instance_finished(uuid, iid, error=f"Emulator error while running the instance: {exc}")
        finally:
            if slot.workdir is not None:
                shutil.rmtree(slot.workdir, ignore_errors=True)
            with self._lock:
                self._running.pop((uuid, iid), None)
                self._threads.discard(threading.current_thread())
                busy = any(s.task_uuid == uuid for s in self._running.values())
                if not busy and not any(item[0] == uuid for item in self._queue):
                    self._forget(uuid)
            self._pump()

    def _run_attempts(self, slot: _Slot) -> None:
        uuid, iid = slot.task_uuid, slot.instance_id
        if not self.backend.instance_dispatched(uuid, iid):
            self.backend.instance_finished(uuid, iid, cancelled=True)
            return
        with self._lock:
            run = self._runs.get(uuid)
        if run is None:
            self.backend.instance_finished(uuid, iid, cancelled=True)
            return
        decision = "upload"
        while True:
            if run.command is not None:
                self._prepare_workdir(run, slot)
            if not self.backend.instance_executing(uuid, iid):
                self.backend.instance_finished(uuid, iid, cancelled=True)
                return
            code = 0 if run.command is None else self._execute(run, slot)
            if self._stopping:
                return
            decision = self.backend.instance_exited(uuid, iid, code)
            if decision != "retry":
                break
        if self._stopping:
            return
        results: list[str] = []
        keys: list[str] = []
        if decision == "upload" and run.command is not None and slot.workdir is not None:
            keys = self._upload_changed(run.result_bucket, run.results_prefix, slot, run.whitelist, run.blacklist)
            if self.storage is not None and run.result_bucket is not None:
                results = [self.storage.object_url(run.result_bucket, k) for k in keys]
        self.backend.instance_finished(uuid, iid, results=results, result_keys=keys, cancelled=decision == "stop")

    def _prepare_workdir(self, run: _TaskRun, slot: _Slot) -> None:
        """A fresh directory holding the task's resources; remember its files to spot results later."""
        with run.cache_lock:
            if not run.cache_ready:
                run.cache_dir.mkdir(parents=True, exist_ok=True)
                if self.storage is not None:
                    for bucket, prefix, strip in run.resources:
                        self.storage.download(bucket, run.cache_dir, prefix, strip)
                run.cache_ready = True
        if slot.workdir is not None:
            shutil.rmtree(slot.workdir, ignore_errors=True)
        workdir = self.work_root / run.uuid / f"instance-{slot.instance_id}"
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(run.cache_dir, workdir)
        slot.workdir = workdir
        slot.baseline = _scan(workdir)

    def _execute(self, run: _TaskRun, slot: _Slot) -> int:
        """Run one attempt; stream its output into the task; return the exit code."""
        assert run.command is not None
        assert slot.workdir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_ENV_PREFIXES)}
        env.update(run.env)
        env.update(
            {
                "INSTANCE_ID": str(slot.instance_id),
                "FRAME_ID": str(slot.instance_id),
                "QARNOT_TASK_UUID": run.uuid,
                slot.mark: "1",
            }
        )
        proc = subprocess.Popen(
            ["sh", "-c", run.command],
            cwd=slot.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        with self._lock:
            slot.proc = proc
            if self._stopping or run.uuid in self._cancelled:
                _kill_group(proc)
        assert proc.stdout is not None
        assert proc.stderr is not None
        streams: dict[int, tuple[str, IO[bytes], LineJoiner]] = {
            proc.stdout.fileno(): ("stdout", proc.stdout, LineJoiner()),
            proc.stderr.fileno(): ("stderr", proc.stderr, LineJoiner()),
        }
        exited_at: float | None = None
        with selectors.DefaultSelector() as selector:
            for _name, pipe, _joiner in streams.values():
                selector.register(pipe, selectors.EVENT_READ)
            while selector.get_map():
                for key, _events in selector.select(timeout=0.2):
                    name, pipe, joiner = streams[key.fd]
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(pipe)
                        continue
                    self.backend.instance_output(run.uuid, slot.instance_id, name, data, joiner.feed(data))
                if exited_at is None:
                    if _wait_exited(proc, block=False):
                        exited_at = time.monotonic()
                        self._end_attempt(slot)
                elif time.monotonic() - exited_at > 2.0:
                    break
        for name, pipe, joiner in streams.values():
            rest = joiner.flush()
            if rest:
                self.backend.instance_output(run.uuid, slot.instance_id, name, b"", rest)
            pipe.close()
        if exited_at is None:  # it closed its output first: wait for its end
            _wait_exited(proc, block=True)
            self._end_attempt(slot)
        with self._lock:  # reap and forget together: nobody may signal this pid once it is free
            code = proc.wait()
            slot.proc = None
        return 128 - code if code < 0 else code

    def _upload_changed(
        self, bucket: str | None, prefix: str, slot: _Slot, whitelist: str | None, blacklist: str | None
    ) -> list[str]:
        """Upload the new or changed files of an instance directory; return the object keys."""
        if bucket is None or self.storage is None or slot.workdir is None:
            return []
        keys: list[str] = []
        for relative, signature in sorted(_scan(slot.workdir).items()):
            if slot.baseline.get(relative) == signature or not _selected(relative, whitelist, blacklist):
                continue
            key = f"{prefix}{relative}"
            self.storage.upload_file(bucket, key, slot.workdir / relative)
            keys.append(key)
        return keys

    def _snapshot(self, task_uuid: str, snap: Snapshot) -> None:
        self.backend.snapshot_result(snap, "InProgress", 0, 0, [])
        try:
            with self._lock:
                slots = [s for s in self._running.values() if s.task_uuid == task_uuid and s.workdir is not None]
            keys: list[str] = []
            size = 0
            for slot in slots:
                assert slot.workdir is not None
                for relative, signature in _scan(slot.workdir).items():
                    if slot.baseline.get(relative) != signature and _selected(relative, snap.whitelist, snap.blacklist):
                        size += signature[0]
                if snap.bucket is not None:
                    self.storage_ensure(snap.bucket)
                    keys += self._upload_changed(
                        snap.bucket, snap.bucket_prefix or "", slot, snap.whitelist, snap.blacklist
                    )
            self.backend.snapshot_result(snap, "Success", size, size, keys)
        except Exception:
            log.exception("snapshot %s failed", snap.id)
            self.backend.snapshot_result(snap, "Failure", 0, 0, [])

    def storage_ensure(self, bucket: str) -> None:
        """Create a snapshot bucket if needed."""
        if self.storage is not None:
            self.storage.ensure_bucket(bucket)

    def _update_resources(self, task_uuid: str) -> None:
        with self._lock:
            run = self._runs.get(task_uuid)
            slots = [s for s in self._running.values() if s.task_uuid == task_uuid and s.workdir is not None]
        if run is None or self.storage is None:
            return
        try:
            with run.cache_lock:
                for bucket, prefix, strip in run.resources:
                    self.storage.download(bucket, run.cache_dir, prefix, strip)
            for slot in slots:
                assert slot.workdir is not None
                for relative in _scan(run.cache_dir):
                    target = slot.workdir / relative
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(run.cache_dir / relative, target)
                        slot.baseline[relative] = _scan_one(target)
        except Exception:
            log.exception("resource update of task %s failed", task_uuid)


def _scan_one(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns)
