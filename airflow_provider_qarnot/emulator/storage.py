"""Storage: moto's S3 server on a loopback port, and the boto3 helpers the emulator itself uses.

moto keeps its buckets in process-global memory, so every emulator of one process shares one S3
namespace; the namespace is wiped when the first server of a process starts and when the last stops.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)

_live_lock = threading.Lock()
_live_servers = 0
_session_lock = threading.Lock()
#: How many times one result upload is sent before the instance fails (see `BucketStorage.upload_file`).
_UPLOAD_ATTEMPTS = 3
_session: boto3.session.Session | None = None


def _boto_session() -> boto3.session.Session:
    """One shared session: its loader caches the S3 model, making every later client cheap to create."""
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def _moto_app() -> tuple[Any, type[Any]]:
    """moto's WSGI dispatcher and a request handler that does not log every request to stderr."""
    from moto.moto_server.werkzeug_app import (  # imported lazily: moto is slow to import
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return None

    return DomainDispatcherApplication(create_backend_app), QuietHandler


class S3Server:
    """moto's S3 server in a background thread of this process (like ``ThreadedMotoServer``, stops fast)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Bind and serve; wipes moto's memory if no other server of this process is alive."""
        global _live_servers
        app, handler = _moto_app()
        self._server = make_server(self.host, self.port, app, threaded=True, request_handler=handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="qarnot-emulator-s3", daemon=True
        )
        self._thread.start()
        with _live_lock:
            first = _live_servers == 0
            _live_servers += 1
        if first:
            self.reset()

    def reset(self) -> None:
        """Forget every bucket (moto's reset endpoint)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            response.read()

    def stop(self) -> None:
        """Stop serving; wipes moto's memory if this was the process's last server."""
        global _live_servers
        if self._server is None:
            return
        with _live_lock:
            _live_servers -= 1
            last = _live_servers == 0
        if last:
            try:
                self.reset()
            except OSError:
                log.debug("moto reset failed", exc_info=True)
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None


MANIFEST = "manifest.json"


def _write_durably(path: Path, data: bytes) -> None:
    """Write a file and flush it to disk before returning."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    """Make the entries (renames, new files) of a directory durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_relative(path: str) -> str | None:
    """A clean relative POSIX path, or None if it would escape the directory."""
    parts = [p for p in PurePosixPath(path.lstrip("/")).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


class BucketStorage:
    """The emulator's own S3 client: bucket checks, resource download, result upload, dump/restore."""

    def __init__(self, endpoint_url: str, access_key: str, secret_key: str) -> None:
        self.endpoint_url = endpoint_url
        self.netloc = urlsplit(endpoint_url).netloc
        config = botocore.config.Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
            connect_timeout=10,
            read_timeout=60,
        )
        with _session_lock:  # creating clients from one session is not thread-safe
            self.client: Any = _boto_session().client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name="us-east-1",
                config=config,
            )

    def bucket_exists(self, name: str) -> bool:
        """Does the bucket exist? (Invalid names simply do not exist.)"""
        try:
            self.client.head_bucket(Bucket=name)
            return True
        except (botocore.exceptions.ClientError, botocore.exceptions.ParamValidationError):
            return False

    def ensure_bucket(self, name: str) -> None:
        """Create the bucket unless it exists."""
        if self.bucket_exists(name):
            return
        try:
            self.client.create_bucket(Bucket=name)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def bucket_count(self) -> int:
        """Number of buckets."""
        return len(self.client.list_buckets().get("Buckets", []))

    def iter_objects(self, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
        """Every object summary under ``prefix``."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def download(self, bucket: str, dest: Path, prefix: str | None = None, strip: str | None = None) -> int:
        """Copy the objects under ``prefix`` into ``dest``, removing ``strip`` from their paths."""
        count = 0
        for obj in self.iter_objects(bucket, prefix or ""):
            key: str = obj["Key"]
            relative = key[len(strip) :] if strip and key.startswith(strip) else key
            safe = _safe_relative(relative)
            if safe is None:
                continue
            target = dest / safe
            if key.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            with open(target, "wb") as handle:
                while chunk := body.read(1024 * 1024):
                    handle.write(chunk)
            count += 1
        return count

    def upload_file(self, bucket: str, key: str, path: Path) -> None:
        """Upload one file; a garbled exchange with the in-process S3 server is tried again.

        moto's threaded werkzeug server now and then answers a bare "400 Bad Request" to a well-formed
        PUT on a reused connection; a task's result must not be lost to that, so the upload is sent again
        (from bytes, so that every attempt carries the whole body).
        """
        body = path.read_bytes()
        for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
            try:
                self.client.put_object(Bucket=bucket, Key=key, Body=body)
                return
            except botocore.exceptions.ClientError as exc:
                error = exc.response.get("Error", {})
                garbled = str(error.get("Code", "")) in ("400", "BadRequest") and attempt < _UPLOAD_ATTEMPTS
                if not garbled:
                    raise
                log.warning(
                    "S3 answered a bare 400 to uploading %s/%s (attempt %d); sending it again", bucket, key, attempt
                )

    def object_url(self, bucket: str, key: str) -> str:
        """``s3://host:port/bucket/key`` as the API lists results."""
        return f"s3://{self.netloc}/{bucket}/{key}"

    def dump(self, directory: Path) -> int:
        """Save every bucket and object under ``directory``; a crash or error midway keeps the previous dump.

        Objects go into a new ``objects-<id>`` directory; then the manifest naming it replaces the old one
        in one rename (the commit point), and only after that are older object directories removed.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        objects_name = f"objects-{secrets.token_hex(8)}"
        objects_dir = directory / objects_name
        objects_dir.mkdir(mode=0o700)
        try:
            buckets: dict[str, list[dict[str, str]]] = {}
            index = 0
            for bucket in self.client.list_buckets().get("Buckets", []):
                name = bucket["Name"]
                entries: list[dict[str, str]] = []
                for obj in self.iter_objects(name):
                    index += 1
                    filename = f"{index:08d}"
                    body = self.client.get_object(Bucket=name, Key=obj["Key"])["Body"].read()
                    _write_durably(objects_dir / filename, body)
                    entries.append({"key": obj["Key"], "file": filename})
                buckets[name] = entries
            _fsync_directory(objects_dir)
            manifest = {"version": 2, "objects": objects_name, "buckets": buckets}
            tmp = directory / f"{MANIFEST}.tmp"
            _write_durably(tmp, json.dumps(manifest).encode("utf-8"))
            os.replace(tmp, directory / MANIFEST)
            _fsync_directory(directory)
        except BaseException:
            shutil.rmtree(objects_dir, ignore_errors=True)
            raise
        for stale in directory.iterdir():
            if stale.is_dir() and stale.name != objects_name and stale.name.startswith("objects"):
                shutil.rmtree(stale, ignore_errors=True)
        return index

    def restore(self, directory: Path) -> int:
        """Re-create the buckets and objects saved by :meth:`dump` (or by older emulators' dumps)."""
        manifest_path = directory / MANIFEST
        if not manifest_path.exists():
            return 0
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("version") == 2:
            objects_dir = directory / str(manifest["objects"])
            buckets: dict[str, list[dict[str, str]]] = manifest["buckets"]
        else:  # the first layout: {bucket: entries} with the files in objects/
            objects_dir, buckets = directory / "objects", manifest
        count = 0
        for name, entries in buckets.items():
            self.ensure_bucket(name)
            for entry in entries:
                data = (objects_dir / entry["file"]).read_bytes()
                self.client.put_object(Bucket=name, Key=entry["key"], Body=data)
                count += 1
        return count
