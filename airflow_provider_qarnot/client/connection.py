"""`QConnection`: the HTTP transport to one Qarnot cluster (session, timeouts, retries, error mapping)."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import uuid as uuid_module
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_qarnot import __version__
from airflow_provider_qarnot.client.errors import ApiCall, error_message, map_error
from airflow_provider_qarnot.client.exceptions import (
    CertificateVerificationException,
    InvalidRequestException,
    MalformedResponseException,
    QarnotException,
    TransientFailureException,
    UnauthorizedException,
)
from airflow_provider_qarnot.client.models import TaskSummary, parse_task_summary
from airflow_provider_qarnot.client.retry import TRANSIENT_STATUSES, RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from airflow_provider_qarnot.client.storage import BucketStorage

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_URL = "https://api.qarnot.com"
DEFAULT_STORAGE_URL = "https://storage.qarnot.com"
#: (connect, read) seconds; every call has a timeout so that none can hang.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)
USER_AGENT = f"airflow-provider-qarnot/{__version__} python-requests/{requests.__version__}"
_REDACTED = "***"
_TRUE = {"1", "true", "yes", "on"}

Timeout = float | tuple[float, float]
Verify = bool | str


#: Transport failures that may pass: the connection failed, timed out or broke mid-answer. Every other
#: `requests` error (an invalid header or URL...) is about the request itself and is never retried.
_TRANSIENT_TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_READ_CHUNK = 64 * 1024


class _Unsent(Exception):
    """Internal: the request surely never reached the server (a connect failure)."""


class _AnswerTooSlow(requests.exceptions.Timeout):
    """Internal: the server kept the answer trickling in past the call's total time limit."""


def check_token(token: str | None) -> str:
    """The token, stripped; `UnauthorizedException` when it is missing or cannot be sent as a header.

    A line break or a non-Latin-1 character (a wrapped or mangled paste) would make `requests` fail with
    a message quoting the header, token included; the message here never quotes it.
    """
    if not token or not isinstance(token, str) or not token.strip():
        raise UnauthorizedException("A Qarnot API token is required")
    token = token.strip()
    bad = [c for c in token if ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0xFF]
    if bad:
        kinds = sorted(
            {"a control character (line break, tab...)" if ord(c) <= 0x7F else "a non-Latin-1 character" for c in bad}
        )
        raise UnauthorizedException(
            f"The Qarnot API token contains {' and '.join(kinds)}, so it cannot be sent in an HTTP header; "
            "paste it again on one line"
        )
    return token


class QConnection:
    """A connection to a Qarnot cluster: one pooled session, a timeout on every call, one retry policy.

    The token is sent as the raw `Authorization` header (no "Bearer"), is never logged, and is
    scrubbed from every exception message and from `repr()`.
    """

    def __init__(
        self,
        cluster_url: str | None = None,
        token: str | None = None,
        *,
        storage_url: str | None = None,
        timeout: Timeout | None = None,
        verify: Verify = True,
        retry: RetryPolicy | None = None,
        storage_verify: Verify | None = None,
    ) -> None:
        self._token = check_token(token)
        url = (cluster_url or DEFAULT_CLUSTER_URL).strip()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"cluster_url must start with http:// or https://, got {url!r}")
        self.cluster_url = url.rstrip("/")
        self._storage_url_override = storage_url.rstrip("/") if storage_url else None
        self.timeout: Timeout = DEFAULT_TIMEOUT if timeout is None else _check_timeout(timeout)
        self.verify: Verify = verify
        self.storage_verify: Verify = verify if storage_verify is None else storage_verify
        self.retry = retry or RetryPolicy()
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {"Authorization": self._token, "User-Agent": USER_AGENT, "Accept": "application/json"}
        )
        self._session.verify = verify
        self._lock = threading.Lock()
        self._settings: dict[str, Any] | None = None
        self._user_info: dict[str, Any] | None = None
        self._storage: BucketStorage | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> QConnection:
        """Build a connection from QARNOT_CLUSTER_URL, QARNOT_CLIENT_TOKEN, QARNOT_STORAGE_URL,
        QARNOT_CLUSTER_UNSAFE and QARNOT_CLUSTER_TIMEOUT; keyword arguments win over the environment."""
        env = os.environ
        kwargs: dict[str, Any] = {
            "cluster_url": env.get("QARNOT_CLUSTER_URL") or None,
            "token": env.get("QARNOT_CLIENT_TOKEN") or None,
            "storage_url": env.get("QARNOT_STORAGE_URL") or None,
        }
        if env.get("QARNOT_CLUSTER_UNSAFE", "").strip().lower() in _TRUE:
            kwargs["verify"] = False
        raw_timeout = env.get("QARNOT_CLUSTER_TIMEOUT")
        if raw_timeout:
            try:
                kwargs["timeout"] = float(raw_timeout)
            except ValueError:
                raise ValueError(f"QARNOT_CLUSTER_TIMEOUT must be a number of seconds, got {raw_timeout!r}") from None
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"QConnection(cluster_url={self.cluster_url!r}, token={_REDACTED!r})"

    def __enter__(self) -> QConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._session.close()

    def redact(self, text: str) -> str:
        """Replace every occurrence of the token in `text`, also as `repr()` and URL-quoting would write it."""
        for form in _token_forms(self._token):
            text = text.replace(form, _REDACTED)
        return text

    # ------------------------------------------------------------------ transport

    def request(
        self,
        method: str,
        path: str,
        *,
        call: ApiCall = ApiCall.GENERIC,
        json: Any = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        idempotent: bool | None = None,
        expect_json: bool = True,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Send one API call with the retry policy; return the decoded JSON (or text), or raise the mapped error.

        Non-idempotent calls (POST by default) are retried only when they surely never reached the
        server (429, or a failed connect); everything else surfaces at once. `retry` replaces the
        connection's policy for this call (`RetryPolicy.none()`: the caller retries itself).
        """
        if idempotent is None:
            idempotent = method.upper() in ("GET", "PUT", "DELETE", "HEAD", "OPTIONS")
        response = self._send_with_retry(method, path, call, json, params, idempotent, retry or self.retry)
        return self._decode(response, expect_json)

    def _send_with_retry(
        self,
        method: str,
        path: str,
        call: ApiCall,
        json: Any,
        params: Any,
        idempotent: bool,
        policy: RetryPolicy,
    ) -> requests.Response:
        url = f"{self.cluster_url}/{path.lstrip('/')}"
        started = time.monotonic()
        attempt = 0
        maybe_acted_on = False  # an earlier attempt may have been carried out although its answer was lost
        while True:
            attempt += 1
            retry_after: float | None = None
            unsent = False
            try:
                response = self._send_once(method, url, json, params)
            except _Unsent as exc:
                failure: str = str(exc)
                status: int | None = None
                retryable = unsent = True
            except _TRANSIENT_TRANSPORT_ERRORS as exc:
                failure = self.redact(f"{type(exc).__name__}: {exc}")
                status = None
                retryable = idempotent
            except requests.RequestException as exc:  # the request itself is unsendable: retrying cannot help
                raise InvalidRequestException(
                    self.redact(f"{method} {path} could not be sent: {type(exc).__name__}: {exc}")
                ) from None
            else:
                if response.status_code < 400:
                    return response
                status = response.status_code
                content_type = response.headers.get("Content-Type", "")
                message = error_message(status, response.content, content_type, redact=self.redact)
                if status == 404 and method.upper() == "DELETE" and maybe_acted_on:
                    log.info("Qarnot %s %s: 404 after an attempt whose answer was lost; it was deleted", method, path)
                    response._content = b""  # success, with nothing to decode (a proxy's 404 page is no answer)
                    return response
                if status not in TRANSIENT_STATUSES:
                    raise map_error(call, status, message, attempts=attempt)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                failure = message
                unsent = status == 429
                retryable = idempotent or unsent
            maybe_acted_on = maybe_acted_on or not unsent
            if not retryable:
                if status is None:
                    raise TransientFailureException(
                        f"{method} {path}: {failure}; not retried because the call may have been acted on",
                        attempts=attempt,
                        reason=f"{method} {path}: {failure}",
                    )
                raise map_error(call, status, failure, attempts=attempt, retry_after=retry_after)
            delay = policy.next_delay(attempt, time.monotonic() - started, retry_after)
            if delay is None:
                if status is None:
                    raise TransientFailureException(
                        f"{method} {path}: {failure} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})",
                        attempts=attempt,
                        unsent=unsent,
                        reason=f"{method} {path}: {failure}",
                    )
                raise map_error(call, status, failure, attempts=attempt, retry_after=retry_after)
            log.info(
                "Qarnot %s %s failed (%s), attempt %d; retrying in %.2fs",
                method,
                path,
                status or failure,
                attempt,
                delay,
            )
            time.sleep(delay)

    def _send_once(self, method: str, url: str, json: Any, params: Any) -> requests.Response:
        try:
            # verify is passed per request: a session-level value loses to REQUESTS_CA_BUNDLE in the environment.
            response = self._session.request(
                method, url, json=json, params=params, timeout=self.timeout, verify=self.verify, stream=True
            )
            self._read_body(response)
            return response
        except requests.exceptions.ConnectTimeout as exc:
            raise _Unsent(self.redact(f"ConnectTimeout: {exc}")) from None
        except requests.exceptions.SSLError as exc:
            if any(isinstance(e, ssl.SSLCertVerificationError) for e in _exception_chain(exc)):
                raise CertificateVerificationException(
                    self.redact(f"TLS certificate verification failed for {url}: {exc}")
                ) from None
            raise  # any other TLS failure (an EOF from a load balancer...) is a connection error like the rest
        except requests.exceptions.ConnectionError as exc:
            if _is_connect_failure(exc):
                raise _Unsent(self.redact(f"ConnectionError: {exc}")) from None
            raise

    def _read_body(self, response: requests.Response) -> None:
        """Read the whole answer within the call's total time limit, connect + 2 x read timeout.

        The read timeout alone bounds each read, so a server trickling bytes could hold a call for ever.
        `read1` returns whatever one read brings, so the deadline is checked between reads.
        """
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        limit = connect + 2 * read
        deadline = time.monotonic() + limit
        chunks: list[bytes] = []
        try:
            while True:
                chunk = _read1(response.raw)
                if not chunk:
                    break
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _AnswerTooSlow(f"the answer to {response.request.method} {response.url} took over {limit:g}s")
        except BaseException:
            response.close()  # drop the half-read connection; a fully read one went back to the pool
            raise
        response._content = b"".join(chunks)
        response._content_consumed = True  # type: ignore[attr-defined]

    def _decode(self, response: requests.Response, expect_json: bool) -> Any:
        if not expect_json:
            content_type = response.headers.get("Content-Type", "")
            if "charset=" not in content_type.lower():  # Qarnot sends text/plain without one: it is UTF-8
                return response.content.decode("utf-8", "replace")
            return response.text
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            snippet = self.redact(response.text)[:200]
            raise MalformedResponseException(
                f"Expected JSON from {response.request.method} {response.url}, got {snippet!r}",
                status_code=response.status_code,
            ) from None

    # ------------------------------------------------------------------ account

    def settings(self) -> dict[str, Any]:
        """`GET /settings`, cached: where the cluster's storage lives."""
        if self._settings is None:
            data = self.request("GET", "/settings")
            self._settings = data if isinstance(data, dict) else {}
        return self._settings

    def user_info(self, refresh: bool = False) -> dict[str, Any]:
        """`GET /info`: the account's email, quotas and counts."""
        if self._user_info is None or refresh:
            data = self.request("GET", "/info")
            if not isinstance(data, dict):
                raise MalformedResponseException("GET /info did not return an object")
            self._user_info = data
        return self._user_info

    def profiles(self) -> list[str]:
        """Names of the profiles the account may use."""
        data = self.request("GET", "/profiles")
        if not isinstance(data, list):
            raise MalformedResponseException("GET /profiles did not return a list")
        return [str(p) if not isinstance(p, dict) else str(p.get("name", "")) for p in data]

    def profile(self, name: str) -> dict[str, Any]:
        """Details of one profile; `MissingProfileException` when unknown."""
        data = self.request("GET", f"/profiles/{name}", call=ApiCall.PROFILE)
        if not isinstance(data, dict):
            raise MalformedResponseException(f"GET /profiles/{name} did not return an object")
        return data

    @property
    def storage_url(self) -> str | None:
        """The S3 endpoint: the explicit one, else what `/settings` advertises (None: storage is off)."""
        if self._storage_url_override:
            return self._storage_url_override
        settings = self.settings()
        if "storage" not in {k.lower() for k in settings}:
            return DEFAULT_STORAGE_URL
        value = next(v for k, v in settings.items() if k.lower() == "storage")
        return str(value).rstrip("/") if value else None

    @property
    def storage(self) -> BucketStorage:
        """The S3 storage of this account (built on first use)."""
        with self._lock:
            if self._storage is None:
                from airflow_provider_qarnot.client.storage import BucketStorage

                self._storage = BucketStorage(self)
            return self._storage

    @property
    def token(self) -> str:
        """The API token (also the S3 secret key). Never log it."""
        return self._token

    # ------------------------------------------------------------------ task listing

    def task_summaries(self, tags: Iterable[str] | None = None) -> list[TaskSummary]:
        """Summaries of the tasks having any of `tags` (all tasks when None), from `GET /tasks/summaries`."""
        params = [("tag", t) for t in tags] if tags else None
        data = self.request("GET", "/tasks/summaries", params=params)
        if not isinstance(data, list):
            raise MalformedResponseException("GET /tasks/summaries did not return a list")
        return [parse_task_summary(item) for item in data]

    def search_tasks(self, filter_: Mapping[str, Any] | None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every task (full JSON) matching `filter_`, following `POST /tasks/paginate` pages."""
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            body = {"filter": dict(filter_) if filter_ else None, "token": token, "maximumResults": page_size}
            page = self.request("POST", "/tasks/paginate", json=body, idempotent=True)
            if not isinstance(page, dict):
                raise MalformedResponseException("POST /tasks/paginate did not return an object")
            data = page.get("data") or []
            if not isinstance(data, list):
                raise MalformedResponseException("POST /tasks/paginate: 'data' is not a list")
            yield from (item for item in data if isinstance(item, dict))
            next_token = page.get("nextToken")
            if not page.get("isTruncated") or not next_token or next_token in seen_tokens:
                return
            seen_tokens.add(str(next_token))
            token = str(next_token)

    def task_states(self, uuids: Iterable[str], chunk_size: int = 100) -> dict[str, TaskSummary]:
        """The current summary of each task in `uuids`, in ⌈N / chunk_size⌉ requests (more only if paged).

        Tasks that no longer exist are absent from the result. The summaries do not keep the task
        documents (`raw` is empty): a poller holding a thousand of them from one poll to the next would
        push a thousand documents into the oldest garbage-collector generation at every poll, and the
        full collections that follow stop every thread (the triggerer's event loop too) for 0.1-0.3 s.
        """
        wanted = list(dict.fromkeys(uuids))
        found: dict[str, TaskSummary] = {}
        for start in range(0, len(wanted), chunk_size):
            chunk = wanted[start : start + chunk_size]
            in_chunk = set(chunk)
            filter_ = uuid_filter(chunk)
            for item in self.search_tasks(filter_, page_size=chunk_size):
                summary = parse_task_summary(item, keep_raw=False)
                if summary.uuid in in_chunk:
                    found[summary.uuid] = summary
        return found


def uuid_filter(uuids: Sequence[str]) -> dict[str, Any]:
    """A paginate filter matching exactly these task uuids (an Or of Equal leaves, the safe form)."""
    leaves = [{"operator": "Equal", "field": "Uuid", "value": u} for u in uuids]
    if len(leaves) == 1:
        return leaves[0]
    return {"operator": "Or", "filters": leaves}


def tag_filter(tag: str) -> dict[str, Any]:
    """A paginate filter matching the tasks that carry `tag`."""
    return {"operator": "Equal", "field": "Tags", "value": tag}


def new_submit_tag() -> str:
    """A unique tag that lets a submit whose outcome is unknown find out whether it created a task."""
    return f"qsubmit-{uuid_module.uuid4().hex}"


def _read1(raw: Any) -> bytes:
    """One read of an answer's body (at most one socket read), with urllib3's errors as `requests` ones."""
    from urllib3 import exceptions as urllib3_errors

    try:
        return bytes(raw.read1(_READ_CHUNK, decode_content=True))
    except urllib3_errors.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from None
    except urllib3_errors.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    except urllib3_errors.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except (urllib3_errors.ProtocolError, urllib3_errors.HTTPError, OSError) as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None


def _token_forms(token: str) -> set[str]:
    """The ways a token can be written into a message: as is, escaped by `repr()`, URL-quoted."""
    from urllib.parse import quote

    forms = {token, repr(token)[1:-1], quote(token, safe=""), quote(token)}
    return {f for f in forms if f}


def _check_timeout(timeout: Timeout) -> Timeout:
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    for value in values:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return timeout


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps (urllib3's `reason`, exception args, causes and contexts)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        nxt = getattr(current, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in getattr(current, "args", ()) if isinstance(a, BaseException)), None)
        current = nxt or current.__cause__ or current.__context__


def _is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether a connection error happened while connecting, so the request was never sent."""
    return any(
        isinstance(e, ConnectionRefusedError)
        or type(e).__name__ in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError")
        for e in _exception_chain(exc)
    )


__all__ = [
    "DEFAULT_CLUSTER_URL",
    "DEFAULT_TIMEOUT",
    "QConnection",
    "QarnotException",
    "new_submit_tag",
    "tag_filter",
    "uuid_filter",
]
