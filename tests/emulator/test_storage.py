"""Bucket dumps (--state-dir): a dump that fails or is cut short leaves the previous one intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_provider_qarnot.emulator import Emulator


def _contents(emu: Emulator, names: set[str]) -> dict[str, dict[str, bytes]]:
    """The objects of the buckets named (moto's S3 state is per process: other tests' buckets are there too)."""
    s3 = emu.s3_client()
    found: dict[str, dict[str, bytes]] = {}
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        if name not in names:
            continue
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])]
        found[name] = {k: s3.get_object(Bucket=name, Key=k)["Body"].read() for k in keys}
    return found


MINE = {"kept", "later"}
ROOT = Path(__file__).resolve().parents[2]


def dump_scenario(state_dir: str) -> None:
    """Dump, change, fail the next dump midway, crash-leftover directory: the previous dump must survive."""
    path = Path(state_dir)
    saved = {"kept": {f"k{i}": f"v{i}".encode() for i in range(5)}}
    with Emulator(token="tok", state_dir=path) as first:
        s3 = first.s3_client()
        s3.create_bucket(Bucket="kept")
        for key, body in saved["kept"].items():
            s3.put_object(Bucket="kept", Key=key, Body=body)

    with Emulator(token="tok", state_dir=path) as second:
        assert _contents(second, MINE) == saved
        s3 = second.s3_client()
        s3.put_object(Bucket="kept", Key="k0", Body=b"changed")
        s3.create_bucket(Bucket="later")
        s3.put_object(Bucket="later", Key="n", Body=b"new")
        real_get = s3.get_object
        reads = {"count": 0}

        def get_then_fail(**kwargs: Any) -> Any:
            reads["count"] += 1
            if reads["count"] > 2:
                raise OSError("disk full")
            return real_get(**kwargs)

        s3.get_object = get_then_fail  # the emulator's dump reads the buckets through this client
    assert reads["count"] == 3  # the dump at shutdown really failed midway

    with Emulator(token="tok", state_dir=path) as third:
        assert _contents(third, MINE) == saved
        leftover = path / "s3" / "objects-left-by-a-crash"
        leftover.mkdir()
        (leftover / "00000001").write_bytes(b"partial")
    directories = [p.name for p in (path / "s3").iterdir() if p.is_dir()]
    assert len(directories) == 1 and directories[0] != leftover.name
    with Emulator(token="tok", state_dir=path) as fourth:
        assert _contents(fourth, MINE) == saved


def test_a_dump_failing_midway_keeps_the_previous_one(tmp_path: Path) -> None:
    """In a process of its own: moto keeps S3 in per-process memory, which other tests' emulators keep alive,
    so only a fresh process shows what a restart really restores."""
    code = f"from tests.emulator.test_storage import dump_scenario; dump_scenario({str(tmp_path)!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def test_dumps_of_older_emulators_are_restored(tmp_path: Path) -> None:
    objects = tmp_path / "s3" / "objects"
    objects.mkdir(parents=True)
    (objects / "00000001").write_bytes(b"old layout")
    (tmp_path / "s3" / "manifest.json").write_text('{"legacy": [{"key": "a/b.txt", "file": "00000001"}]}')
    with Emulator(token="tok", state_dir=tmp_path) as emu:
        assert _contents(emu, {"legacy"}) == {"legacy": {"a/b.txt": b"old layout"}}
    assert not objects.exists()
    with Emulator(token="tok", state_dir=tmp_path) as emu:
        assert _contents(emu, {"legacy"}) == {"legacy": {"a/b.txt": b"old layout"}}


def test_a_bare_400_from_the_s3_server_does_not_lose_a_result(tmp_path: Path) -> None:
    """moto's server now and then answers a bare 400 to a well-formed PUT; the upload is sent again."""
    import botocore.exceptions

    with Emulator(token="tok") as emu:
        storage = emu._storage
        assert storage is not None
        storage.ensure_bucket("bare-400")
        real_put = storage.client.put_object
        calls = {"n": 0}

        def garbled_once(**kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": "400", "Message": "Bad Request"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                    "PutObject",
                )
            return real_put(**kwargs)

        storage.client.put_object = garbled_once
        result = tmp_path / "r.txt"
        result.write_text("result\n")
        storage.upload_file("bare-400", "r.txt", result)
        storage.client.put_object = real_put
        assert calls["n"] == 2
        assert _contents(emu, {"bare-400"}) == {"bare-400": {"r.txt": b"result\n"}}
