"""A small ray tracer: renders one frame of a camera orbiting a scene of spheres, as a PNG.

It is the workload of the `qarnot_render_pipeline` example: each Qarnot instance renders the frame
whose number is its INSTANCE_ID (or FRAME_ID), with nothing but the Python standard library.

    python3 renderer.py --scene scene.json --frame 3 --out frames/frame_0003.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from png import write_png

Vec = tuple[float, float, float]


def add(a: Vec, b: Vec) -> Vec:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def mul(a: Vec, k: float) -> Vec:
    return (a[0] * k, a[1] * k, a[2] * k)


def dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def norm(a: Vec) -> Vec:
    length = math.sqrt(dot(a, a)) or 1.0
    return (a[0] / length, a[1] / length, a[2] / length)


def cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


class Scene:
    """Spheres over a checkered floor, one point light, a camera orbiting the origin."""

    def __init__(self, spec: dict) -> None:
        self.width = int(spec.get("width", 160))
        self.height = int(spec.get("height", 100))
        self.frames = int(spec.get("frames", 8))
        self.spheres = [
            (tuple(s["center"]), float(s["radius"]), tuple(s["color"]), float(s.get("specular", 0.3)))
            for s in spec["spheres"]
        ]
        self.light = tuple(spec.get("light", [5.0, 8.0, -3.0]))
        self.orbit_radius = float(spec.get("orbit_radius", 6.0))
        self.camera_height = float(spec.get("camera_height", 2.0))

    def hit(self, origin: Vec, direction: Vec) -> tuple[float, int] | None:
        best: tuple[float, int] | None = None
        for index, (center, radius, _, _) in enumerate(self.spheres):
            oc = sub(origin, center)
            b = dot(oc, direction)
            c = dot(oc, oc) - radius * radius
            disc = b * b - c
            if disc < 0:
                continue
            t = -b - math.sqrt(disc)
            if t > 1e-4 and (best is None or t < best[0]):
                best = (t, index)
        if direction[1] < -1e-6:
            t = -(origin[1] + 1.0) / direction[1]
            if t > 1e-4 and (best is None or t < best[0]):
                best = (t, -1)
        return best

    def shade(self, origin: Vec, direction: Vec, depth: int = 0) -> Vec:
        found = self.hit(origin, direction)
        if found is None:
            sky = 0.5 * (direction[1] + 1.0)
            return add(mul((1.0, 1.0, 1.0), 1.0 - sky), mul((0.45, 0.65, 1.0), sky))
        t, index = found
        point = add(origin, mul(direction, t))
        if index < 0:
            normal: Vec = (0.0, 1.0, 0.0)
            checker = (math.floor(point[0]) + math.floor(point[2])) % 2
            color: Vec = (0.85, 0.85, 0.85) if checker else (0.25, 0.25, 0.3)
            specular = 0.1
        else:
            center, _, color, specular = self.spheres[index]
            normal = norm(sub(point, center))
        to_light = norm(sub(self.light, point))
        shadowed = self.hit(add(point, mul(normal, 1e-3)), to_light) is not None
        diffuse = 0.0 if shadowed else max(0.0, dot(normal, to_light))
        result = mul(color, 0.15 + 0.85 * diffuse)
        if depth < 2 and specular > 0:
            reflected = sub(direction, mul(normal, 2 * dot(direction, normal)))
            result = add(mul(result, 1 - specular), mul(self.shade(point, norm(reflected), depth + 1), specular))
        return result

    def render(self, frame: int) -> list[bytearray]:
        angle = 2 * math.pi * frame / max(1, self.frames)
        eye: Vec = (self.orbit_radius * math.sin(angle), self.camera_height, -self.orbit_radius * math.cos(angle))
        forward = norm(sub((0.0, 0.0, 0.0), eye))
        right = norm(cross((0.0, 1.0, 0.0), forward))
        up = cross(forward, right)
        aspect = self.width / self.height
        rows = []
        for y in range(self.height):
            row = bytearray()
            for x in range(self.width):
                u = (2 * (x + 0.5) / self.width - 1) * aspect * 0.6
                v = (1 - 2 * (y + 0.5) / self.height) * 0.6
                direction = norm(add(forward, add(mul(right, u), mul(up, v))))
                r, g, b = self.shade(eye, direction)
                row.extend(int(max(0.0, min(1.0, c)) ** (1 / 2.2) * 255) for c in (r, g, b))
            rows.append(row)
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="scene.json")
    parser.add_argument("--frame", type=int, default=None, help="default: $INSTANCE_ID or $FRAME_ID")
    parser.add_argument("--out", default=None, help="default: frames/frame_NNNN.png")
    args = parser.parse_args(argv)
    frame = args.frame
    if frame is None:
        frame = int(os.environ.get("INSTANCE_ID", os.environ.get("FRAME_ID", "0")))
    scene = Scene(json.loads(Path(args.scene).read_text()))
    out = Path(args.out or f"frames/frame_{frame:04d}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = scene.render(frame)
    write_png(out, scene.width, scene.height, rows)
    print(f"frame {frame}: {scene.width}x{scene.height} written to {out} in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
