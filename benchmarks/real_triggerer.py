"""A real ``airflow triggerer`` watching 200 deferred ``QarnotTaskSensor``s of one DAG run (emulator, simulate mode).

Run it (about 6-10 min on 2 cores, most of it Airflow starting 200 sensor task instances)::

    uv run python benchmarks/real_triggerer.py [--tasks 200] [--interval 10] [--parallelism 8]

Set-up
    ``tools.airflow_stack.LocalStack`` in a temporary directory: ``qarnot-emulator --mode simulate`` and a
    real api-server, scheduler (LocalExecutor), dag-processor and triggerer on sqlite. Before Airflow
    starts, the script submits through the emulator's API one dependency job holding a *gate* task (a
    simulated day long) and N tasks that depend on it, with ``EMULATOR_DURATION_S`` spread uniformly over
    5-40 s. A dependent task stays ``Submitted`` until the gate is final, so every sensor's first poke
    sees an unfinished task and defers, however long Airflow takes to start them all; aborting the gate
    then starts every task's simulated timeline at once. The DAG (written to a temporary dags folder)
    is ``QarnotTaskSensor.partial(deferrable=True, poke_interval=<interval>, timeout=3600).expand(task_uuid=<the
    N uuids>)``; its triggers use the shared poller (the ``[qarnot] shared_polling`` default).
    ``max_active_tasks`` is 1024 and the default pool has 1024 slots, and deferred task instances hold
    no executor slot, so all N are deferred at once while ``--parallelism`` workers start them.

Phases and what is reported
    1. defer: from triggering the run until the REST API shows N deferred task instances ("time until
       all deferred"); the emulator requests of this phase (mostly the first pokes) are listed.
    2. deferred: for ``--window`` seconds (default 3 intervals) nothing ends; the emulator's
       ``/_emulator/stats`` delta over the window, divided by window/interval, is the number of API
       requests per poll interval the triggerer spends on N waiting sensors (⌈N/100⌉ expected).
    3. finish: the gate is aborted, the tasks end over 5-40 s, and the script waits for the DAG run to
       succeed. Reported: last task ``endDate`` (emulator) -> last sensor ``end_date`` (REST API), and per
       sensor (its task's ``endDate`` -> its own ``end_date``) p50/p99: detection by the triggerer plus
       Airflow resuming the task on a worker.
    Detection alone: each sensor's trigger log has the time of its "Trigger fired event"; minus its
    task's ``endDate`` it is the triggerer's share (the rest is Airflow resuming the task on a worker).
    Triggerer memory: RSS of every process of the ``airflow triggerer`` process group (the supervisor
    and its trigger-runner child, which hosts the event loop), from /proc, sampled every second: idle
    (healthy, before the run), when all N are deferred, and the peak. Triggerer CPU seconds during the
    deferred window, from /proc. Blocked-loop warnings: lines containing "async thread was blocked" in
    the triggerer's log and in the Airflow logs folder (the triggerer warns when its 0.1 s watchdog
    sleep overruns ``[triggerer] blocked_main_thread_warning_threshold``, 0.2 s).

Other processes on the machine compete for the 2 cores: the load average is printed. Every process the
stack starts is stopped at the end (``LocalStack.stop`` in ``finally``). The last printed line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
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

from tools.airflow_stack import LocalStack  # noqa: E402

DAG_ID = "qarnot_triggerer_bench"
TAG = "real-triggerer-bench"
BLOCKED = re.compile(r"async thread was blocked for ([0-9.]+) seconds")
DAG_FILE = '''"""{n} deferrable QarnotTaskSensors over pre-submitted Qarnot tasks (benchmarks/real_triggerer.py)."""

import json
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_qarnot.sensors.qarnot import QarnotTaskSensor

UUIDS = json.loads((Path(__file__).parent / "uuids.json").read_text())

with DAG(
    dag_id="{dag_id}",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1024,
):
    QarnotTaskSensor.partial(
        task_id="watch", deferrable=True, poke_interval={interval}, timeout=3600, retries=0
    ).expand(task_uuid=UUIDS)
'''


class BenchStack(LocalStack):
    """The local stack with room for many deferred task instances."""

    asyncio_debug = False

    def base_env(self) -> dict[str, str]:
        env = super().base_env()
        if self.asyncio_debug:
            env["PYTHONASYNCIODEBUG"] = "1"
        env.update(
            {
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "1024",
                "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "1024",
                "AIRFLOW__TRIGGERER__CAPACITY": "1000",
            }
        )
        return env


class Emulator:
    """The emulator's API, with the stack's token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = token

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.url}{path}", timeout=120, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def api_requests(self) -> dict[str, int]:
        stats = self.call("GET", "/_emulator/stats")
        return {k: int(v) for k, v in stats["requests"].items() if "/_emulator" not in k}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def group_processes(pgid: int) -> dict[int, tuple[str, int, float]]:
    """Live processes of a process group: pid -> (command line, RSS KiB, CPU seconds), from /proc."""
    found: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found[int(entry)] = (cmdline.strip()[:80], int(rss.group(1)) if rss else 0, cpu)
    return found


class MemorySampler(threading.Thread):
    """RSS of the triggerer's process group every second (total and per process)."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.peak_kb = 0
        self.peak_by_pid: dict[int, tuple[str, int]] = {}
        self._stop_event = threading.Event()

    def snapshot(self) -> tuple[int, dict[int, tuple[str, int, float]]]:
        procs = group_processes(self.pgid)
        return sum(rss for _, rss, _ in procs.values()), procs

    def run(self) -> None:
        while not self._stop_event.is_set():
            total, procs = self.snapshot()
            self.peak_kb = max(self.peak_kb, total)
            for pid, (cmd, rss, _) in procs.items():
                if rss > self.peak_by_pid.get(pid, ("", 0))[1]:
                    self.peak_by_pid[pid] = (cmd, rss)
            self._stop_event.wait(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def mb(kib: float) -> float:
    return round(kib / 1024, 1)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))]


def parse_time(text: str | None) -> float | None:
    """An Airflow or Qarnot ISO date as epoch seconds (None for none / Qarnot's 0001-01-01)."""
    if not text or text.startswith("0001"):
        return None
    value = text.strip().replace("Z", "+00:00")
    from datetime import datetime, timezone

    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def count_states(tis: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ti in tis:
        counts[str(ti.get("state"))] = counts.get(str(ti.get("state")), 0) + 1
    return counts


def submit_tasks(emu: Emulator, n: int, min_s: float, max_s: float) -> tuple[str, list[str]]:
    """A dependency job with a day-long gate task and N tasks waiting for it; returns (gate, uuids)."""
    job = emu.call("POST", "/jobs", json={"name": "bench-gate-job", "useDependencies": True})["uuid"]
    gate_body = {
        "name": "bench-gate",
        "profile": "docker-batch",
        "instanceCount": 1,
        "jobUuid": job,
        "tags": [TAG + "-gate"],
        "constants": [{"key": "EMULATOR_DURATION_S", "value": "86400"}],
    }
    gate = emu.call("POST", "/tasks", json=gate_body)["uuid"]
    durations = [min_s + (max_s - min_s) * (i + 0.5) / n for i in range(n)]
    body = [
        {
            "name": f"bench-{i}",
            "profile": "docker-batch",
            "instanceCount": 1,
            "jobUuid": job,
            "tags": [TAG],
            "dependencies": {"dependsOn": [gate]},
            "constants": [{"key": "EMULATOR_DURATION_S", "value": f"{durations[i]:.3f}"}],
        }
        for i in range(n)
    ]
    answers = emu.call("POST", "/tasks", json=body)
    if any(a["statusCode"] != 200 for a in answers):
        raise RuntimeError(f"submission failed: {answers[:3]}")
    return gate, [a["uuid"] for a in answers]


def events_fired(stack: LocalStack, uuids: list[str]) -> dict[int, float]:
    """map_index -> when the triggerer fired the sensor's event, from the sensor's trigger log.

    Airflow's "Trigger fired event" line when the log has it (it is sometimes missing at the end of a
    trigger log), else the trigger's own last line, "Qarnot task <uuid>: <outcome>", logged just before
    it yields the event.
    """
    fired: dict[int, float] = {}
    for path in (stack.home / "logs").rglob("*.log.trigger.*"):
        match = re.search(r"map_index=(\d+)", str(path))
        if match is None or int(match.group(1)) >= len(uuids):
            continue
        own_line = f"Qarnot task {uuids[int(match.group(1))]}: "
        airflow_stamp = own_stamp = None
        for line in path.read_text(errors="replace").splitlines():
            if '"Trigger fired event"' in line:
                airflow_stamp = parse_time(json.loads(line).get("timestamp"))
            elif own_line in line:
                own_stamp = parse_time(json.loads(line).get("timestamp"))
        stamp = airflow_stamp or own_stamp
        if stamp is not None:
            fired[int(match.group(1))] = stamp
    return fired


def slow_callbacks(stack: LocalStack) -> list[str]:
    """asyncio's "Executing ... took N seconds" lines of the triggerer (with --asyncio-debug)."""
    path = stack.logs / "triggerer.log"
    if not path.is_file():
        return []
    return [line.strip()[:300] for line in path.read_text(errors="replace").splitlines() if " took " in line]


def blocked_warnings(stack: LocalStack) -> tuple[int, float, list[str]]:
    """Count of "async thread was blocked" lines in the triggerer's log and the Airflow logs, the worst one."""
    count, worst, files = 0, 0.0, []
    candidates = [stack.logs / "triggerer.log", *sorted((stack.home / "logs").rglob("*"))]
    seen: set[str] = set()
    for path in candidates:
        if not path.is_file():
            continue
        hits = 0
        for line in path.read_text(errors="replace").splitlines():
            match = BLOCKED.search(line)
            if match and line not in seen:  # the same line may reach two files
                seen.add(line)
                hits += 1
                worst = max(worst, float(match.group(1)))
        if hits:
            files.append(f"{path.name}: {hits}")
        count += hits
    return count, worst, files


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    token = "bench-" + secrets.token_hex(12)
    dags = root / "dags"
    dags.mkdir(parents=True)
    stack = BenchStack(root / "stack", dags, token, parallelism=args.parallelism)
    stack.asyncio_debug = args.asyncio_debug
    stack.reset()
    result: dict[str, Any] = {"n": args.tasks, "interval_s": args.interval, "parallelism": args.parallelism}
    sampler: MemorySampler | None = None
    completed = False
    uuids: list[str] = []
    end_dates: dict[str, float | None] = {}
    last_task_end = math.nan
    started = time.monotonic()
    try:
        print(f"== emulator (simulate mode); load average {load_average()}", flush=True)
        stack.start_emulator("--mode", "simulate")
        assert stack.emulator_url is not None
        emu = Emulator(stack.emulator_url, token)
        gate, uuids = submit_tasks(emu, args.tasks, args.min_duration, args.max_duration)
        (dags / "uuids.json").write_text(json.dumps(uuids))
        (dags / "qarnot_triggerer_bench.py").write_text(
            DAG_FILE.format(n=args.tasks, dag_id=DAG_ID, interval=args.interval)
        )
        print(f"   {len(uuids)} tasks submitted behind gate task {gate}", flush=True)
        print("== airflow db migrate, then api-server, scheduler, dag-processor, triggerer", flush=True)
        stack.migrate()
        stack.start_airflow()
        stack.wait_until_healthy()
        stack.wait_for_dag(DAG_ID)
        triggerer = stack.service("triggerer").process
        assert triggerer is not None
        time.sleep(5)  # let the triggerer settle before its idle memory is read
        sampler = MemorySampler(triggerer.pid)
        idle_kb, idle_procs = sampler.snapshot()
        sampler.start()
        print(
            f"   healthy after {time.monotonic() - started:.0f} s; triggerer idle RSS {mb(idle_kb)} MB "
            f"({', '.join(f'{pid}: {mb(rss)} MB' for pid, (_, rss, _) in idle_procs.items())}); "
            f"load average {load_average()}",
            flush=True,
        )

        # ---- phase 1: until all N are deferred
        before_run = emu.api_requests()
        t_trigger = time.time()
        run_id = stack.trigger(DAG_ID)
        last_print = 0.0
        while True:
            tis = stack.all_task_instances(DAG_ID, run_id)
            counts = count_states(tis)
            now = time.time()
            if now - last_print > 15:
                print(f"   [{now - t_trigger:5.0f} s] {counts}", flush=True)
                last_print = now
            if counts.get("deferred", 0) == args.tasks:
                break
            bad = {s: c for s, c in counts.items() if s in ("failed", "upstream_failed", "success", "up_for_retry")}
            if bad:
                raise RuntimeError(f"task instances left the deferred path: {counts}")
            if now - t_trigger > args.timeout:
                raise TimeoutError(f"not all deferred after {args.timeout:.0f} s: {counts}")
            time.sleep(1.0)
        t_all_deferred = time.time()
        deferred_kb, _ = sampler.snapshot()
        ramp = delta(before_run, emu.api_requests())
        result["time_to_all_deferred_s"] = round(t_all_deferred - t_trigger, 1)
        result["requests_while_deferring"] = ramp
        print(
            f"== all {args.tasks} deferred {result['time_to_all_deferred_s']} s after the trigger; "
            f"requests meanwhile {ramp}; triggerer RSS {mb(deferred_kb)} MB",
            flush=True,
        )

        # ---- phase 2: nothing ends for `window` seconds
        window = args.window if args.window else 3 * args.interval
        cpu_before = sum(cpu for _, _, cpu in group_processes(triggerer.pid).values())
        s0, t0 = emu.api_requests(), time.time()
        time.sleep(window)
        s1, t1 = emu.api_requests(), time.time()
        cpu_after = sum(cpu for _, _, cpu in group_processes(triggerer.pid).values())
        still = count_states(stack.all_task_instances(DAG_ID, run_id)).get("deferred", 0)
        steady = delta(s0, s1)
        intervals = (t1 - t0) / args.interval
        result["requests_per_interval_deferred"] = round(sum(steady.values()) / intervals, 2)
        result["routes_deferred"] = steady
        result["triggerer_cpu_s_per_interval_deferred"] = round((cpu_after - cpu_before) / intervals, 3)
        result["still_deferred_after_window"] = still
        print(
            f"== {t1 - t0:.0f} s with {still} deferred: {steady} -> "
            f"{result['requests_per_interval_deferred']} requests per {args.interval:g} s interval; "
            f"triggerer CPU {result['triggerer_cpu_s_per_interval_deferred']} s per interval",
            flush=True,
        )

        # ---- phase 3: the tasks end; wait for every sensor
        emu.call("POST", f"/tasks/{gate}/abort")
        t_gate = time.time()
        s2 = emu.api_requests()
        state, _ = stack.wait_for_run(DAG_ID, run_id, timeout=args.timeout, poll=2.0)
        t_done = time.time()
        finish = delta(s2, emu.api_requests())
        tis = stack.all_task_instances(DAG_ID, run_id)
        rows = emu.call(
            "POST",
            "/tasks/search",
            json={"filter": {"operator": "Equal", "field": "Tags", "value": TAG}, "select": ["uuid", "endDate"]},
        )
        end_dates = {r["uuid"]: parse_time(r["endDate"]) for r in rows}
        ti_ends = {ti["map_index"]: parse_time(ti.get("end_date")) for ti in tis}
        per_sensor = [
            ti_ends[i] - end_dates[u]  # type: ignore[operator]
            for i, u in enumerate(uuids)
            if ti_ends.get(i) is not None and end_dates.get(u) is not None
        ]
        last_task_end = max(v for v in end_dates.values() if v is not None)
        last_sensor_end = max(v for v in ti_ends.values() if v is not None)
        result.update(
            {
                "run_state": state,
                "ti_states": count_states(tis),
                "last_task_end_to_all_sensors_success_s": round(last_sensor_end - last_task_end, 1),
                "task_end_to_sensor_success_p50_s": round(percentile(per_sensor, 0.5), 1),
                "task_end_to_sensor_success_p99_s": round(percentile(per_sensor, 0.99), 1),
                "gate_abort_to_run_done_s": round(t_done - t_gate, 1),
                "requests_while_finishing": finish,
                "requests_per_interval_finishing": round(sum(finish.values()) / ((t_done - t_gate) / args.interval), 2),
            }
        )
        sampler.stop()
        result.update(
            {
                "triggerer_rss_idle_mb": mb(idle_kb),
                "triggerer_rss_all_deferred_mb": mb(deferred_kb),
                "triggerer_rss_peak_mb": mb(sampler.peak_kb),
                "triggerer_rss_growth_mb": mb(sampler.peak_kb - idle_kb),
                "triggerer_rss_peak_by_process_mb": {
                    f"{pid} {cmd}": mb(rss) for pid, (cmd, rss) in sorted(sampler.peak_by_pid.items())
                },
                "load_average_end": load_average(),
            }
        )
        completed = True
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        print("== stopping every process", flush=True)
        result["needed_sigkill"] = stack.stop()
        result["leftovers"] = stack.leftovers()
    if not completed:
        return result

    # The logs are complete once every process has stopped.
    fired = events_fired(stack, uuids)
    detect = [fired[i] - end_dates[u] for i, u in enumerate(uuids) if i in fired and end_dates.get(u) is not None]
    count, worst, files = blocked_warnings(stack)
    result.update(
        {
            "events_found_in_trigger_logs": len(detect),
            "detect_p50_s": round(percentile(detect, 0.5), 2),
            "detect_p99_s": round(percentile(detect, 0.99), 2),
            "detect_max_s": round(max(detect), 2) if detect else math.nan,
            "last_task_end_to_last_event_s": round(max(fired.values()) - last_task_end, 2) if fired else math.nan,
            "blocked_warnings": count,
            "blocked_worst_s": worst,
            "blocked_warning_files": files,
            "asyncio_slow_callbacks": slow_callbacks(stack)[:10] if args.asyncio_debug else None,
        }
    )
    print(
        f"== run {result['run_state']} {result['gate_abort_to_run_done_s']} s after the gate was aborted; last task "
        f"ended -> all sensors succeeded: {result['last_task_end_to_all_sensors_success_s']} s; per sensor (task "
        f"end -> task instance success) p50 {result['task_end_to_sensor_success_p50_s']} s, p99 "
        f"{result['task_end_to_sensor_success_p99_s']} s; of which detection (task end -> event fired in the "
        f"triggerer, {len(detect)} trigger logs): p50 {result['detect_p50_s']} s, p99 {result['detect_p99_s']} s, "
        f"max {result['detect_max_s']} s; last task end -> last event {result['last_task_end_to_last_event_s']} s; "
        f"requests meanwhile {result['requests_while_finishing']}",
        flush=True,
    )
    print(
        f"== triggerer RSS idle {result['triggerer_rss_idle_mb']} MB, all deferred "
        f"{result['triggerer_rss_all_deferred_mb']} MB, peak {result['triggerer_rss_peak_mb']} MB "
        f"{result['triggerer_rss_peak_by_process_mb']}; 'async thread was blocked' warnings: {count} "
        f"(worst {worst} s) {files}; load average {result['load_average_end']}",
        flush=True,
    )
    return result


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="deferred sensors (and Qarnot tasks)")
    parser.add_argument("--interval", type=float, default=10.0, help="the sensors' poke_interval = poll interval")
    parser.add_argument("--parallelism", type=int, default=8, help="[core] parallelism (LocalExecutor workers)")
    parser.add_argument("--window", type=float, default=0.0, help="seconds measured while deferred (3 intervals)")
    parser.add_argument("--min-duration", type=float, default=5.0)
    parser.add_argument("--max-duration", type=float, default=40.0)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds allowed for each phase")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) at the end")
    parser.add_argument(
        "--asyncio-debug",
        action="store_true",
        help="diagnosis: PYTHONASYNCIODEBUG=1 for every component, and list the triggerer's slow callbacks",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="real-triggerer-"))
    try:
        result = run(args, root)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result.get("run_state") == "success" and not result.get("leftovers") else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
