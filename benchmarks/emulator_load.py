"""Load benchmark of the Qarnot emulator: 1,000 running (simulated) tasks, 5,000 GET /tasks/{uuid}.

Starts ``qarnot-emulator --mode simulate`` as a subprocess (so its memory is measured honestly from
/proc), submits 1,000 tasks that stay FullyExecuting for an hour, then polls them from a few threads,
each with its own pooled ``requests.Session``. Prints p50/p99 latency and the emulator's RSS; the last
line is one JSON object.

    uv run python benchmarks/emulator_load.py [--tasks 1000] [--requests 5000] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.processes import start_emulator_process, stop_process  # noqa: E402

TOKEN = "bench-token"


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    proc, api = start_emulator_process(TOKEN, "--mode", "simulate", "--sim-duration", "3600")
    try:
        session = requests.Session()
        session.headers["Authorization"] = TOKEN
        rss_idle = rss_mb(proc.pid)
        started = time.perf_counter()
        uuids: list[str] = []
        batch = 100
        for offset in range(0, args.tasks, batch):
            body = [
                {
                    "name": f"bench-{n}",
                    "profile": "docker-batch",
                    "instanceCount": 1,
                    "tags": ["bench"],
                    "constants": [{"key": "DOCKER_CMD", "value": "sleep 3600"}],
                }
                for n in range(offset, min(args.tasks, offset + batch))
            ]
            response = session.post(f"{api}/tasks", json=body, timeout=60)
            response.raise_for_status()
            uuids += [item["uuid"] for item in response.json() if item["statusCode"] == 200]
        submit_seconds = time.perf_counter() - started
        print(f"submitted {len(uuids)} tasks in {submit_seconds:.2f} s")

        deadline = time.monotonic() + 30
        while True:  # simulated tasks reach FullyExecuting after 2 s
            summaries = session.get(f"{api}/tasks/summaries", params={"tag": "bench"}, timeout=60).json()
            running = sum(1 for s in summaries if s["state"] == "FullyExecuting")
            if running == len(uuids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"{running} tasks FullyExecuting")

        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        per_thread = args.requests // args.threads

        def worker(index: int) -> None:
            nonlocal errors
            local = requests.Session()
            local.headers["Authorization"] = TOKEN
            mine: list[float] = []
            bad = 0
            for n in range(per_thread):
                uuid = uuids[(index * per_thread + n) % len(uuids)]
                t0 = time.perf_counter()
                response = local.get(f"{api}/tasks/{uuid}", timeout=30)
                mine.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200 or response.json()["state"] != "FullyExecuting":
                    bad += 1
            with lock:
                latencies.extend(mine)
                errors += bad

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        load_started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        load_seconds = time.perf_counter() - load_started
        rss = rss_mb(proc.pid)
        result = {
            "tasks_running": running,
            "requests": len(latencies),
            "threads": args.threads,
            "errors": errors,
            "p50_ms": round(percentile(latencies, 0.50), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "mean_ms": round(statistics.fmean(latencies), 2),
            "max_ms": round(max(latencies), 2),
            "throughput_rps": round(len(latencies) / load_seconds, 1),
            "submit_s": round(submit_seconds, 2),
            "rss_mb": round(rss, 1),
            "rss_idle_mb": round(rss_idle, 1),
        }
        print(
            f"GET /tasks/{{uuid}} x{len(latencies)} from {args.threads} threads: p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms, {result['throughput_rps']} req/s; emulator RSS {result['rss_mb']} MiB"
        )
    finally:
        stop_process(proc, grace=30)
    print(json.dumps(result))
    return 0 if errors == 0 and running == args.tasks else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
