"""Estimate pi by Monte Carlo sampling: one instance of a parameter-sweep task.

Reads SAMPLES and SEED from the environment (Qarnot constants) and INSTANCE_ID, and writes
`results/estimate_<instance>.json`.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path


def main() -> None:
    samples = int(os.environ.get("SAMPLES", "100000"))
    instance = int(os.environ.get("INSTANCE_ID", "0"))
    rng = random.Random(int(os.environ.get("SEED", "0")) * 1000 + instance)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    out = Path("results") / f"estimate_{instance}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"instance": instance, "samples": samples, "inside": inside}))
    print(f"instance {instance}: {samples} samples, pi ~ {4 * inside / samples:.4f}")


if __name__ == "__main__":
    main()
