"""``qarnot-emulator``: run the emulator until SIGTERM/SIGINT.

Prints exactly one line, ``Qarnot emulator ready: api=http://127.0.0.1:PORT storage=http://127.0.0.1:SPORT``,
once it serves; on SIGTERM/SIGINT it kills the task processes it started, saves ``--state-dir`` and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from types import FrameType

from .faults import FaultRule, load_fault_argument
from .server import Emulator, is_loopback


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="qarnot-emulator",
        description="Local emulator of the Qarnot REST API and its S3 storage. It RUNS TASK COMMANDS ON THIS "
        "HOST: keep it on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="API port (0 = pick a free port)")
    parser.add_argument("--storage-port", type=int, default=0, help="S3 port (0 = pick a free port)")
    parser.add_argument("--token", default=None, help="API token (default: $QARNOT_CLIENT_TOKEN)")
    parser.add_argument("--state-dir", default=None, help="persist tasks and buckets here across restarts")
    parser.add_argument("--max-tasks", type=int, default=None, help="task quota (403 beyond it)")
    parser.add_argument("--cores", type=int, default=2, help="instances run at once in run mode (default 2)")
    parser.add_argument("--mode", choices=("run", "simulate"), default="run")
    parser.add_argument("--sim-duration", type=float, default=1.0, help="seconds per simulated task (default 1)")
    parser.add_argument("--sim-outcome", choices=("success", "failure"), default="success")
    parser.add_argument("--faults", default=None, help="fault rules: inline JSON or a JSON file path")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault random source")
    parser.add_argument("--credits-exhausted", action="store_true", help="answer 402 to task submission")
    parser.add_argument("--email", default="emulator@qarnot.local", help="account email (= S3 access key)")
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow binding a non-loopback address (DANGEROUS: remote command execution)",
    )
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qarnot-emulator`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = args.token or os.environ.get("QARNOT_CLIENT_TOKEN")
    if not token:
        print("qarnot-emulator: a token is required (--token or QARNOT_CLIENT_TOKEN)", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        if not args.allow_non_loopback:
            print(
                f"qarnot-emulator: refusing to bind {args.host}: the emulator runs task commands on this host. "
                "Use 127.0.0.1, or --allow-non-loopback if you really mean it.",
                file=sys.stderr,
            )
            return 2
        print(
            f"WARNING: qarnot-emulator is listening on {args.host}: anyone who can reach it with the token "
            "can run commands on this machine.",
            file=sys.stderr,
        )
    rules: list[FaultRule] = []
    seed = args.seed
    credits = args.credits_exhausted
    if args.faults:
        try:
            rules, fault_seed, fault_credits = load_fault_argument(args.faults)
        except (OSError, ValueError) as exc:
            print(f"qarnot-emulator: invalid --faults: {exc}", file=sys.stderr)
            return 2
        seed = fault_seed if fault_seed is not None else seed
        credits = credits or bool(fault_credits)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with warnings.catch_warnings():  # the non-loopback warning was printed above already
        warnings.simplefilter("ignore")
        emulator = Emulator(
            token,
            cores=args.cores,
            mode=args.mode,
            state_dir=args.state_dir,
            max_tasks=args.max_tasks,
            sim_duration=args.sim_duration,
            sim_outcome=args.sim_outcome,
            seed=seed,
            faults=rules,
            credits_exhausted=credits,
            host=args.host,
            port=args.port,
            storage_port=args.storage_port,
            email=args.email,
        )
    try:
        emulator.start()
    except OSError as exc:
        print(f"qarnot-emulator: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"Qarnot emulator ready: api={emulator.api_url} storage={emulator.storage_url}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
