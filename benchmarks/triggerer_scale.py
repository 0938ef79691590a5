"""Scale benchmark: one event loop (one triggerer) watches N Qarnot tasks, shared poller vs per-task polling.

Run it (about 1 min per run, 5 runs by default: ~6 min on 2 cores)::

    uv run python benchmarks/triggerer_scale.py                      # N = 100, 1,000, 5,000; 10 s interval
    uv run python benchmarks/triggerer_scale.py --sizes 1000 --interval 5 --per-task-max 1000

Set-up
    The parent process starts ``qarnot-emulator --mode simulate`` as a subprocess (one for the whole
    benchmark, emptied with ``POST /_emulator/reset`` before each run). Each run (one N, one polling mode)
    is a fresh child process, so that its CPU time and memory are its own and no earlier run's garbage
    hides growth. The child points Airflow at a throw-away ``AIRFLOW_HOME`` (as ``tests/conftest.py``
    does), sets ``AIRFLOW_CONN_QARNOT_DEFAULT`` to the emulator, imports Airflow, the trigger and the hook
    module, then submits N tasks with the bulk ``POST /tasks`` (arrays of 500). Task *i* has the constant
    ``EMULATOR_DURATION_S`` = 5 + 35 * (i + 0.5) / N seconds (``--min-duration``/``--max-duration``;
    uniform, shuffled with a fixed seed), and one task in ten has ``EMULATOR_OUTCOME=failure``.
    Then it runs N ``QarnotTaskTrigger(task_uuid, poll_interval=--interval, deadline=now + 1 h,
    shared_polling=...)`` in ONE asyncio event loop, the way the triggerer's ``TriggerRunner.run_trigger``
    does: each trigger is its own asyncio task that enters a greenback portal, iterates ``trigger.run()``
    until the generator ends (it yields one event), and awaits ``trigger.cleanup()``. The connection is
    read by the trigger itself through ``BaseHook.aget_connection`` (the environment secrets backend).
    Per-task polling with N above ``--per-task-max`` (default 1,000) is skipped (the reason is printed):
    5,000 triggers each sending ``GET /tasks/{uuid}`` every 10 s is 500 requests/s through the loop's
    6 worker threads on 2 cores, which is precisely what the shared poller avoids.

What is measured, and how
    requests/interval (avg)
        ``GET /_emulator/stats`` is read by the child just before the first trigger starts and just after
        the last event; the difference of every route except ``/_emulator/*``, divided by
        (elapsed seconds / interval).
    requests/interval (peak)
        The parent reads ``/_emulator/stats`` every 0.5 s while the child runs; the largest number of API
        requests between two samples at most one interval apart, inside the child's run window. For the
        shared poller this is the first poll, when all N tasks are still watched (⌈N/100⌉ requests).
    detect p50/p99/max
        For each task: (wall-clock time at which its trigger's event reached the runner coroutine)
        minus (the task's ``endDate`` in the emulator, read afterwards with ``POST /tasks/search``).
        ``endDate`` is the emulator's ``time.time()`` at the instant the simulated task became final
        (microseconds); both clocks are this machine's wall clock, so the difference is exact.
        Every event's status is checked against the task's outcome.
    max loop block
        A watchdog coroutine sleeps 10 ms in a loop and records how late it wakes up (the triggerer's
        own watchdog sleeps 0.1 s and warns above ``blocked_main_thread_warning_threshold`` = 0.2 s).
        "steady block" is the same once every trigger waits (after the start-up burst). "loop busy" is
        the most CPU the loop's thread used during one watchdog sleep (``time.thread_time()``): the
        part of a block the loop spent computing. A late wake-up with little loop CPU means the loop's
        thread was not running: the GIL was held by a worker thread (the poll's JSON parsing) or the
        machine's other processes had the cores: the process CPU (all threads) and the garbage
        collections that ran meanwhile (``gc.callbacks``; a collection holds the GIL, whichever thread
        triggers it) tell which. Each block over 50 ms is listed as [seconds after start, lateness,
        loop-thread CPU, process CPU, GC seconds]. "max GC s" is the longest collection of the run.
    CPU s
        ``resource.getrusage(RUSAGE_SELF)`` user + system of the child, from just before the triggers start
        to the last event (emulator CPU, read from /proc by the parent, is printed separately).
    RSS growth
        Peak RSS of the child during the run (``VmHWM``, reset through ``/proc/self/clear_refs`` at the
        baseline) minus its idle RSS (``VmRSS`` after imports, submission and ``gc.collect()``); "RSS +MB
        waiting" is ``VmRSS`` minus idle once every trigger waits, before the first poll (the share of
        the N waiting triggers; the rest is polling: N parsed task summaries per poll).

The last printed line is one JSON object for N = 1,000 (or the size nearest to it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import math
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.processes import start_emulator_process, stop_process  # noqa: E402

TOKEN = "triggerer-scale-token"
SUBMIT_BATCH = 500
ADMIN_PREFIX = "/_emulator"
MODES = ("shared", "per_task")
PRELOADED = (
    "airflow.triggers.base",
    "airflow.sdk.execution_time.supervisor",
    "airflow_provider_qarnot.hooks.qarnot",
    "airflow_provider_qarnot.triggers.qarnot",
    "greenback",
)


# ------------------------------------------------------------------------------------------ helpers


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """One ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM...)."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))]


def api_requests(stats: dict[str, Any]) -> dict[str, int]:
    """Request counts per route, without the emulator's own admin routes."""
    return {k: int(v) for k, v in stats.get("requests", {}).items() if ADMIN_PREFIX not in k}


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    old, new = api_requests(before), api_requests(after)
    return {k: new[k] - old.get(k, 0) for k in new if new[k] - old.get(k, 0)}


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


# ------------------------------------------------------------------------------------------ parent


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    """``qarnot-emulator --mode simulate`` on a free port; returns the process and its API URL."""
    return start_emulator_process(TOKEN, "--mode", "simulate", "--sim-duration", "3600")


class StatsSampler(threading.Thread):
    """Reads ``/_emulator/stats`` every `period` seconds: (wall time, API requests so far)."""

    def __init__(self, api: str, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.api, self.period = api, period
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = TOKEN
            while not self._stop_event.is_set():
                with contextlib.suppress(requests.RequestException):
                    sent = time.time()
                    stats = session.get(f"{self.api}/_emulator/stats", timeout=10).json()
                    # The emulator counted its requests somewhere between sending and receiving.
                    self.samples.append(((sent + time.time()) / 2, sum(api_requests(stats).values())))
                self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=15)

    def peak_per_window(self, start: float, end: float, window: float) -> int:
        """Most API requests between two samples in [start, end] at most `window` seconds apart."""
        inside = [(t, c) for t, c in self.samples if start - self.period <= t <= end + self.period]
        best = 0
        for i, (t_a, c_a) in enumerate(inside):
            for t_b, c_b in inside[i + 1 :]:
                if t_b - t_a > window:
                    break
                best = max(best, c_b - c_a)
        return best


def run_child(
    api: str, emulator_pid: int, n: int, mode: str, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    """One run in a fresh process; returns the child's JSON result plus what the parent measured."""
    with requests.Session() as session:
        session.headers["Authorization"] = TOKEN
        session.post(f"{api}/_emulator/reset", json={}, timeout=60).raise_for_status()
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--api",
        api,
        "--n",
        str(n),
        "--mode",
        mode,
        "--interval",
        str(args.interval),
        "--min-duration",
        str(args.min_duration),
        "--max-duration",
        str(args.max_duration),
        "--seed",
        str(args.seed),
    ]
    sampler = StatsSampler(api)
    sampler.start()
    emulator_cpu = proc_cpu_seconds(emulator_pid)
    log_path = log_dir / f"child-{n}-{mode}.log"
    try:
        with log_path.open("w") as log:
            result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=log, text=True, check=False)
    finally:
        sampler.stop()
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"run N={n} {mode} failed (exit {result.returncode}):\n{result.stdout[-2000:]}\n{tail}")
    data: dict[str, Any] = json.loads(lines[-1])
    data["emulator_cpu_s"] = round(proc_cpu_seconds(emulator_pid) - emulator_cpu, 2)
    data["requests_per_interval_peak"] = sampler.peak_per_window(data["t_start"], data["t_end"], args.interval)
    data["emulator_rss_mb"] = round(proc_status_kb("VmRSS", emulator_pid) / 1024, 1)
    data["load_after"] = load_average()
    return data


def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def print_table(results: list[dict[str, Any]], interval: float) -> None:
    columns = [
        ("N", "n", 0),
        ("mode", "mode", 0),
        ("req/int avg", "requests_per_interval", 1),
        ("req/int peak", "requests_per_interval_peak", 0),
        ("detect p50 s", "p50_detect_s", 2),
        ("detect p99 s", "p99_detect_s", 2),
        ("detect max s", "max_detect_s", 2),
        ("max block s", "max_loop_block_s", 3),
        ("steady block s", "max_loop_block_steady_s", 3),
        ("loop busy s", "max_loop_busy_s", 3),
        ("max GC s", "gc_max_pause_s", 3),
        ("CPU s", "cpu_s", 1),
        ("RSS +MB", "rss_growth_mb", 1),
        ("RSS +MB waiting", "rss_growth_all_waiting_mb", 1),
        ("events ok", "events_ok", 0),
        ("run s", "elapsed_s", 1),
        ("emu CPU s", "emulator_cpu_s", 1),
    ]
    header = [c[0] for c in columns]
    rows = [[fmt(r.get(key), d) for _, key, d in columns] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(f"\n== results (interval {interval:g} s)")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def parent(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= set(MODES):
        raise SystemExit(f"--modes must be among {MODES}")
    print(
        f"triggerer scale benchmark: sizes {sizes}, interval {args.interval:g} s, durations "
        f"{args.min_duration:g}-{args.max_duration:g} s, {os.cpu_count()} CPUs, load average {load_average()}"
    )
    proc, api = start_emulator()
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="triggerer-scale-") as tmp:
            for n in sizes:
                for mode in modes:
                    if mode == "per_task" and n > args.per_task_max:
                        reason = (
                            f"skipped per-task polling for N={n}: above --per-task-max={args.per_task_max} "
                            f"({n / args.interval:.0f} GET/s through 6 worker threads on {os.cpu_count()} cores)"
                        )
                        print(reason, flush=True)
                        skipped.append(reason)
                        continue
                    print(f"-- N={n} {mode}: running (load average {load_average()})", flush=True)
                    data = run_child(api, proc.pid, n, mode, args, Path(tmp))
                    routes = ", ".join(f"{k}: {v}" for k, v in sorted(data["routes"].items()))
                    print(
                        f"   {data['events_ok']}/{n} events as expected in {data['elapsed_s']:.1f} s; "
                        f"requests {routes}; all triggers waiting {data['all_waiting_after_s']:.2f} s after start; "
                        f"first task ended {data['first_end_after_start_s']:.1f} s after start; "
                        f"blocks >50 ms: {data['blocks_over_50ms']} "
                        f"[s after start, late s, loop CPU s, process CPU s, GC s]: {data['blocks_over_50ms_at']}, "
                        f"gen2 GCs {data['gc_gen2_collections']} (longest {data['gc_gen2_max_s']} s), "
                        f">200 ms: {data['blocks_over_200ms']}; "
                        f"idle RSS {data['rss_idle_mb']:.1f} MB; emulator RSS {data['emulator_rss_mb']} MB; "
                        f"load average after {data['load_after']}",
                        flush=True,
                    )
                    results.append(data)
    finally:
        stop_process(proc)
    print_table(results, args.interval)
    for reason in skipped:
        print(reason)
    by_key = {(r["n"], r["mode"]): r for r in results}
    focus = min({r["n"] for r in results}, key=lambda n: abs(n - 1000))
    shared, per_task = by_key.get((focus, "shared"), {}), by_key.get((focus, "per_task"), {})
    summary = {
        "n": focus,
        "interval_s": args.interval,
        "requests_per_interval_shared": shared.get("requests_per_interval"),
        "requests_per_interval_per_task": per_task.get("requests_per_interval"),
        "requests_per_interval_peak_shared": shared.get("requests_per_interval_peak"),
        "requests_per_interval_peak_per_task": per_task.get("requests_per_interval_peak"),
        "p50_detect_s_shared": shared.get("p50_detect_s"),
        "p99_detect_s_shared": shared.get("p99_detect_s"),
        "p99_detect_s_per_task": per_task.get("p99_detect_s"),
        "max_loop_block_s": shared.get("max_loop_block_s"),
        "max_loop_block_s_per_task": per_task.get("max_loop_block_s"),
        "max_loop_block_steady_s_shared": shared.get("max_loop_block_steady_s"),
        "max_loop_busy_s_shared": shared.get("max_loop_busy_s"),
        "all_waiting_after_s_shared": shared.get("all_waiting_after_s"),
        "cpu_s_shared": shared.get("cpu_s"),
        "cpu_s_per_task": per_task.get("cpu_s"),
        "rss_mb": shared.get("rss_growth_mb"),
        "rss_mb_per_task": per_task.get("rss_growth_mb"),
    }
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------------ child


def prepare_airflow_env(api: str) -> str:
    """A throw-away AIRFLOW_HOME and the Qarnot connection, before anything imports airflow."""
    home = tempfile.mkdtemp(prefix="triggerer-scale-airflow-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(home, "dags")
    os.environ["AIRFLOW_CONN_QARNOT_DEFAULT"] = json.dumps({"conn_type": "qarnot", "host": api, "password": TOKEN})
    return home


def submit_tasks(session: requests.Session, api: str, n: int, args: argparse.Namespace) -> dict[str, str]:
    """N simulated tasks with spread-out durations; returns uuid -> expected event status."""
    rng = random.Random(args.seed)
    span = args.max_duration - args.min_duration
    durations = [args.min_duration + span * (i + 0.5) / n for i in range(n)]
    rng.shuffle(durations)
    expected: dict[str, str] = {}
    for offset in range(0, n, SUBMIT_BATCH):
        body = []
        for i in range(offset, min(n, offset + SUBMIT_BATCH)):
            outcome = "failure" if i % 10 == 9 else "success"
            body.append(
                {
                    "name": f"scale-{i}",
                    "profile": "docker-batch",
                    "instanceCount": 1,
                    "tags": ["triggerer-scale"],
                    "constants": [
                        {"key": "EMULATOR_DURATION_S", "value": f"{durations[i]:.3f}"},
                        {"key": "EMULATOR_OUTCOME", "value": outcome},
                    ],
                }
            )
        response = session.post(f"{api}/tasks", json=body, timeout=120)
        response.raise_for_status()
        for item, spec in zip(response.json(), body, strict=True):
            if item["statusCode"] != 200:
                raise SystemExit(f"submission failed: {item}")
            expected[item["uuid"]] = spec["constants"][1]["value"]
    return expected


async def drive(uuids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run one trigger per uuid in this loop as the triggerer does; returns event times and loop lateness."""
    import greenback

    from airflow_provider_qarnot.triggers.qarnot import QarnotTaskTrigger

    loop = asyncio.get_running_loop()
    events: dict[str, tuple[float, dict[str, Any]]] = {}
    started_at: list[float] = []
    waiting_at: list[float] = []
    # One row per 10 ms watchdog sleep: (wall time it began, how late it woke, CPU used meanwhile by the loop's
    # thread and by the whole process).
    lateness: list[tuple[float, float, float, float]] = []
    rss: list[tuple[float, int]] = []  # (wall time, VmRSS KiB), about every second
    stop = asyncio.Event()

    async def watchdog() -> None:
        while not stop.is_set():
            before, cpu_before, all_before = time.perf_counter(), time.thread_time(), time.process_time()
            await asyncio.sleep(0.01)
            late = time.perf_counter() - before - 0.01
            cpu, all_cpu = time.thread_time() - cpu_before, time.process_time() - all_before
            lateness.append((time.time() - late - 0.01, late, cpu, all_cpu))
            if len(lateness) % 100 == 0:
                rss.append((time.time(), proc_status_kb("VmRSS")))

    class TimedTrigger(QarnotTaskTrigger):
        """The trigger unchanged, noting when it starts to wait (its connection is read, its hook built)."""

        async def _wait(self, hook: Any) -> dict[str, Any]:
            waiting_at.append(time.time())
            return await super()._wait(hook)

    async def run_trigger(trigger: QarnotTaskTrigger) -> None:  # as TriggerRunner.run_trigger
        await greenback.ensure_portal()
        started_at.append(time.time())
        try:
            async for event in trigger.run():
                events[trigger.task_uuid] = (time.time(), event.payload)
        finally:
            with contextlib.suppress(Exception):
                await trigger.cleanup()

    dog = loop.create_task(watchdog())
    await asyncio.sleep(0.05)
    t_start = time.time()
    deadline = t_start + 3600
    tasks = [
        loop.create_task(
            run_trigger(
                TimedTrigger(
                    task_uuid=uuid,
                    poll_interval=args.interval,
                    deadline=deadline,
                    shared_polling=args.mode == "shared",
                )
            ),
            name=f"trigger-{uuid}",
        )
        for uuid in uuids
    ]
    timeout = args.max_duration + 4 * args.interval + 120
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    t_end = time.time()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await dog
    crashed = [repr(t.exception()) for t in done if t.exception() is not None]
    return {
        "events": events,
        "t_start": t_start,
        "t_end": t_end,
        "lateness": lateness,
        "rss": rss,
        "start_spread_s": (max(started_at) - t_start) if started_at else math.nan,
        "all_waiting_at": max(waiting_at) if waiting_at else math.nan,
        "not_done": len(pending),
        "crashed": crashed[:5],
    }


def child(args: argparse.Namespace) -> int:
    home = prepare_airflow_env(args.api)
    try:
        return measure(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def measure(args: argparse.Namespace) -> int:
    """Submit the tasks, run the triggers, print the run's JSON line."""
    # What the triggerer process has loaded before its first trigger runs: Airflow, the task SDK's
    # supervisor (else the first `aget_connection` imports it on the event loop, a 0.1 s block) and,
    # after the first trigger, the hook module. Loaded here so that they count as idle memory.
    for module in PRELOADED:
        importlib.import_module(module)

    session = requests.Session()
    session.headers["Authorization"] = TOKEN
    expected = submit_tasks(session, args.api, args.n, args)
    uuids = list(expected)

    gc.collect()
    rss_idle_kb = proc_status_kb("VmRSS")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    stats_before = session.get(f"{args.api}/_emulator/stats", timeout=30).json()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)

    pauses: list[tuple[float, int, float]] = []  # every garbage collection: (wall time it began, generation, s)
    gc_began = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            took = time.perf_counter() - gc_began[0]
            pauses.append((time.time() - took, int(info["generation"]), took))

    gc.callbacks.append(on_gc)
    try:
        outcome = asyncio.run(drive(uuids, args))
    finally:
        gc.callbacks.remove(on_gc)
    outcome["gc_pauses"] = pauses

    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    rss_peak_kb = proc_status_kb("VmHWM")
    stats_after = session.get(f"{args.api}/_emulator/stats", timeout=30).json()
    search = {
        "filter": {"operator": "Equal", "field": "Tags", "value": "triggerer-scale"},
        "select": ["uuid", "endDate", "state"],
    }
    rows = session.post(f"{args.api}/tasks/search", json=search, timeout=120).json()
    session.close()

    from airflow_provider_qarnot.emulator.formats import parse_date

    end_dates = {row["uuid"]: parse_date(row["endDate"]) for row in rows if not row["endDate"].startswith("0001")}
    events = outcome["events"]
    latencies = [events[u][0] - end_dates[u] for u in uuids if u in events and u in end_dates]
    events_ok = sum(1 for u in uuids if u in events and events[u][1].get("status") == expected[u])
    wrong = [
        {"uuid": u, "status": events[u][1].get("status"), "message": events[u][1].get("message")}
        for u in uuids
        if u in events and events[u][1].get("status") != expected[u]
    ][:3]
    elapsed = outcome["t_end"] - outcome["t_start"]
    routes = stats_delta(stats_before, stats_after)
    total = sum(routes.values())
    t_start, waiting = outcome["t_start"], outcome["all_waiting_at"]
    lateness = [late for _, late, _, _ in outcome["lateness"]]
    busy = [cpu for _, _, cpu, _ in outcome["lateness"]]
    # Steady state: once every trigger waits (the start-up burst of N connection reads is over).
    steady = [late for began, late, _, _ in outcome["lateness"] if began >= waiting]
    pauses = outcome["gc_pauses"]
    blocks = [
        (
            round(began - t_start, 2),
            round(late, 3),
            round(cpu, 3),
            round(all_cpu, 3),
            round(sum(d for at, _, d in pauses if began <= at <= began + late + 0.01), 3),
        )
        for began, late, cpu, all_cpu in outcome["lateness"]
        if late > 0.05
    ]
    rss_waiting_kb = next((kb for t, kb in outcome["rss"] if t >= waiting), rss_peak_kb)
    result = {
        "n": args.n,
        "mode": args.mode,
        "interval_s": args.interval,
        "elapsed_s": round(elapsed, 2),
        "routes": routes,
        "requests": total,
        "requests_per_interval": round(total / (elapsed / args.interval), 1),
        "p50_detect_s": round(percentile(latencies, 0.50), 3),
        "p99_detect_s": round(percentile(latencies, 0.99), 3),
        "max_detect_s": round(max(latencies), 3) if latencies else math.nan,
        "mean_detect_s": round(statistics.fmean(latencies), 3) if latencies else math.nan,
        "max_loop_block_s": round(max(lateness), 4) if lateness else math.nan,
        "max_loop_block_steady_s": round(max(steady), 4) if steady else math.nan,
        "max_loop_busy_s": round(max(busy), 4) if busy else math.nan,
        "all_waiting_after_s": round(outcome["all_waiting_at"] - outcome["t_start"], 3),
        "blocks_over_50ms": sum(1 for x in lateness if x > 0.05),
        "blocks_over_200ms": sum(1 for x in lateness if x > 0.2),
        "blocks_over_50ms_at": blocks[:12],
        "gc_max_pause_s": round(max((d for _, _, d in pauses), default=0.0), 4),
        "gc_gen2_collections": sum(1 for _, gen, _ in pauses if gen == 2),
        "gc_gen2_max_s": round(max((d for _, gen, d in pauses if gen == 2), default=0.0), 4),
        "cpu_s": round(
            (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime), 2
        ),
        "rss_idle_mb": round(rss_idle_kb / 1024, 1),
        "rss_peak_mb": round(rss_peak_kb / 1024, 1),
        "rss_growth_mb": round((rss_peak_kb - rss_idle_kb) / 1024, 1),
        "rss_growth_all_waiting_mb": round((rss_waiting_kb - rss_idle_kb) / 1024, 1),
        "events": len(events),
        "events_ok": events_ok,
        "wrong_events": wrong,
        "not_done": outcome["not_done"],
        "crashed": outcome["crashed"],
        "start_spread_s": round(outcome["start_spread_s"], 3),
        "first_end_after_start_s": round(min(end_dates.values()) - outcome["t_start"], 2) if end_dates else math.nan,
        "t_start": outcome["t_start"],
        "t_end": outcome["t_end"],
    }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="comma-separated numbers of tasks/triggers")
    parser.add_argument("--interval", type=float, default=10.0, help="poll_interval of every trigger (s)")
    parser.add_argument("--min-duration", type=float, default=5.0, help="shortest simulated task (s)")
    parser.add_argument("--max-duration", type=float, default=40.0, help="longest simulated task (s)")
    parser.add_argument("--per-task-max", type=int, default=1000, help="largest N run with per-task polling")
    parser.add_argument("--modes", default=",".join(MODES), help="polling modes to run: shared, per_task")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
