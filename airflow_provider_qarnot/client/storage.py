"""Qarnot's S3 storage through boto3: buckets, uploading task resources, downloading results."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from airflow_provider_qarnot.client.exceptions import (
    BucketStorageUnavailableException,
    CertificateVerificationException,
    InvalidRequestException,
    MissingBucketException,
    QarnotApiError,
    QarnotException,
    TransientFailureException,
    UnauthorizedException,
)

if TYPE_CHECKING:
    from airflow_provider_qarnot.client.connection import QConnection

log = logging.getLogger(__name__)

_MAX_WORKERS = 8
_MULTIPART_CHUNK = 8 * 1024 * 1024


class BucketStorage:
    """The account's S3 storage: endpoint from `GET /settings`, access key = `/info` email, secret = token."""

    def __init__(self, connection: QConnection) -> None:
        url = connection.storage_url
        if not url:
            raise BucketStorageUnavailableException(
                "This Qarnot cluster has no bucket storage (settings.storage is null)"
            )
        import boto3
        from botocore.config import Config

        from airflow_provider_qarnot.client.connection import USER_AGENT

        self._connection = connection
        self.endpoint_url = url
        email = connection.user_info().get("email")
        if not isinstance(email, str) or not email:
            raise QarnotApiError("GET /info returned no account email, which is the storage access key")
        config = Config(
            user_agent=USER_AGENT,
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=_MAX_WORKERS * 2,
            connect_timeout=10,
            read_timeout=120,
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=email,
            aws_secret_access_key=connection.token,
            region_name="us-east-1",
            verify=connection.storage_verify,
            config=config,
        )

    def __repr__(self) -> str:
        return f"BucketStorage(endpoint_url={self.endpoint_url!r})"

    def _call(self, what: str, func: Any, /, **kwargs: Any) -> Any:
        """Run one boto3 call, mapping S3 and transfer errors onto the client's exceptions (token scrubbed).

        boto3's transfer helpers wrap an S3 error (`S3UploadFailedError`) or give up on their own retries
        (`RetriesExceededError`); errors about the request itself (a bad bucket name, no credentials, an
        untrusted certificate) cannot pass and are never reported as transient.
        """
        from boto3.exceptions import Boto3Error, RetriesExceededError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            ParamValidationError,
            SSLError,
        )

        try:
            return func(**kwargs)
        except ClientError as exc:
            raise self._client_error(what, exc, kwargs) from None
        except Boto3Error as exc:
            wrapped = exc.__context__ or exc.__cause__
            if isinstance(wrapped, ClientError):
                raise self._client_error(what, wrapped, kwargs) from None
            message = self._connection.redact(f"{what}: {exc}")
            if isinstance(exc, RetriesExceededError):
                raise TransientFailureException(message) from None
            raise QarnotApiError(message) from None
        except ParamValidationError as exc:
            raise InvalidRequestException(self._connection.redact(f"{what}: {exc}")) from None
        except NoCredentialsError as exc:
            raise UnauthorizedException(self._connection.redact(f"{what}: {exc}")) from None
        except SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                raise CertificateVerificationException(
                    self._connection.redact(
                        f"{what}: TLS certificate verification failed for {self.endpoint_url}: {exc}"
                    )
                ) from None
            raise TransientFailureException(self._connection.redact(f"{what}: {exc}")) from None
        except BotoCoreError as exc:
            raise TransientFailureException(self._connection.redact(f"{what}: {exc}")) from None

    def _client_error(self, what: str, exc: Any, kwargs: dict[str, Any]) -> QarnotException:
        """The client exception for an S3 error answer."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = self._connection.redact(f"{what}: {error.get('Message') or code}")
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and "Bucket" in kwargs and "Key" not in kwargs):
            return MissingBucketException(message, status_code=status)
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return UnauthorizedException(message, status_code=status)
        if code in ("InvalidBucketName", "InvalidArgument", "KeyTooLongError", "MalformedXML"):
            return InvalidRequestException(message, status_code=status)
        if (isinstance(status, int) and (status >= 500 or status == 429)) or code in ("SlowDown", "RequestTimeout"):
            return TransientFailureException(message, status_code=status)
        return QarnotApiError(message, status_code=status)

    # ------------------------------------------------------------------ buckets

    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists."""
        try:
            self._call("head_bucket", self._client.head_bucket, Bucket=bucket)
        except MissingBucketException:
            return False
        return True

    def create_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist yet."""
        if not self.bucket_exists(bucket):
            self._call("create_bucket", self._client.create_bucket, Bucket=bucket)

    def list_keys(self, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
        """Every object under `prefix` (dicts with Key, Size, ETag)."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", self._client.list_objects_v2, **kwargs)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def delete_bucket(self, bucket: str, missing_ok: bool = False) -> None:
        """Empty the bucket and delete it."""
        try:
            keys = [obj["Key"] for obj in self.list_keys(bucket)]
            for start in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                self._call("delete_objects", self._client.delete_objects, Bucket=bucket, Delete={"Objects": batch})
            self._call("delete_bucket", self._client.delete_bucket, Bucket=bucket)
        except MissingBucketException:
            if not missing_ok:
                raise
            log.warning("Bucket %s does not exist; nothing to delete", bucket)

    # ------------------------------------------------------------------ upload

    def upload_file(self, bucket: str, local_path: str | Path, key: str) -> None:
        """Upload one file under `key`."""
        self._call("upload_file", self._client.upload_file, Filename=str(local_path), Bucket=bucket, Key=key)

    def upload_directory(self, bucket: str, local_dir: str | Path, prefix: str = "", create: bool = True) -> int:
        """Upload every file below `local_dir` to `bucket` under `prefix`, in parallel; returns the file count.

        Files whose remote copy already has the same size and MD5 are skipped.
        """
        root = Path(local_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory")
        if create:
            self.create_bucket(bucket)
        prefix = _clean_prefix(prefix)
        remote = {o["Key"]: o for o in self.list_keys(bucket, prefix)}
        files = sorted(p for p in root.rglob("*") if p.is_file())
        pending = []
        for path in files:
            key = prefix + path.relative_to(root).as_posix()
            obj = remote.get(key)
            if obj is not None and _same_content(path, obj):
                continue
            pending.append((path, key))
        _parallel(lambda item: self.upload_file(bucket, item[0], item[1]), pending)
        return len(files)

    # ------------------------------------------------------------------ download

    def download_prefix(self, bucket: str, prefix: str, local_dir: str | Path) -> list[Path]:
        """Download every object under `prefix` to `local_dir` (the prefix itself removed from the paths)."""
        clean = _clean_prefix(prefix) if prefix else ""
        objects = list(self.list_keys(bucket, clean))
        return self._download(bucket, [(o["Key"], o, o["Key"][len(clean) :]) for o in objects], local_dir)

    def download_keys(self, bucket: str, keys: Iterable[str], local_dir: str | Path) -> list[Path]:
        """Download exactly these objects to `local_dir`, keeping their key paths."""
        items = []
        for key in keys:
            head = self._call("head_object", self._client.head_object, Bucket=bucket, Key=key)
            items.append((key, {"Key": key, "Size": head.get("ContentLength"), "ETag": head.get("ETag")}, key))
        return self._download(bucket, items, local_dir)

    def _download(self, bucket: str, items: list[tuple[str, dict[str, Any], str]], local_dir: str | Path) -> list[Path]:
        root = Path(local_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        jobs: list[tuple[str, Path]] = []
        written: list[Path] = []
        for key, obj, relative in items:
            if not relative or relative.endswith("/"):
                continue
            target = _safe_target(root, relative)
            written.append(target)
            if target.is_file() and _same_content(target, obj):
                continue
            jobs.append((key, target))

        def fetch(job: tuple[str, Path]) -> None:
            key, target = job
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            os.close(handle)
            try:
                self._call("download_file", self._client.download_file, Bucket=bucket, Key=key, Filename=tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

        _parallel(fetch, jobs)
        return written


def _clean_prefix(prefix: str) -> str:
    """Normalize a key prefix: no leading slash, no `//`, one trailing slash."""
    parts = [p for p in prefix.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"prefix {prefix!r} must not contain '..'")
    return "/".join(parts) + "/" if parts else ""


def _safe_target(root: Path, relative: str) -> Path:
    """The local path for an object key, refusing keys that would escape `root`."""
    pure = PurePosixPath(relative.lstrip("/"))
    if any(part == ".." for part in pure.parts):
        raise QarnotException(f"Refusing to write result {relative!r} outside {root}")
    target = (root / Path(*pure.parts)).resolve()
    if root not in target.parents:
        raise QarnotException(f"Refusing to write result {relative!r} outside {root}")
    return target


def _same_content(path: Path, obj: dict[str, Any]) -> bool:
    """Whether a local file matches a remote object (size, then MD5 against a single-part ETag)."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if obj.get("Size") is not None and int(obj["Size"]) != size:
        return False
    etag = str(obj.get("ETag") or "").strip('"')
    if not etag or "-" in etag:
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_MULTIPART_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest() == etag


def _parallel(func: Any, items: list[Any]) -> None:
    """Run `func` over `items` on a small thread pool, re-raising the first error."""
    if not items:
        return
    if len(items) == 1:
        func(items[0])
        return
    with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(items))) as pool:
        for future in [pool.submit(func, item) for item in items]:
            future.result()
