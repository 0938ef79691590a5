"""Bucket storage: result keys can never write outside the download directory; S3 errors map to client errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qarnot.client import InvalidRequestException, MissingBucketException, QarnotException
from airflow_provider_qarnot.client.storage import _clean_prefix, _safe_target
from tests.client.conftest import connect


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../escape.txt", ".", "a/.."])
def test_keys_that_escape_or_are_the_directory_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(QarnotException, match="outside"):
        _safe_target(tmp_path, key)


def test_normal_and_absolute_looking_keys_stay_inside(tmp_path: Path) -> None:
    assert _safe_target(tmp_path, "frames/f1.png") == tmp_path.resolve() / "frames" / "f1.png"
    assert _safe_target(tmp_path, "/abs/f.txt") == tmp_path.resolve() / "abs" / "f.txt"


@pytest.mark.parametrize(
    ("prefix", "expected"), [("", ""), ("a", "a/"), ("/a//b/", "a/b/"), ("a\\b", "a/b/"), ("./a", "a/")]
)
def test_prefixes_are_normalized(prefix: str, expected: str) -> None:
    assert _clean_prefix(prefix) == expected


def test_prefix_with_dotdot_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        _clean_prefix("a/../b")


def test_upload_to_a_missing_bucket_is_a_missing_bucket(qarnot_emulator: Any, tmp_path: Path) -> None:
    """boto3's transfer wraps the S3 error (S3UploadFailedError): it must still read as MissingBucketException."""
    (tmp_path / "a.txt").write_text("hi")
    with connect(qarnot_emulator) as conn:
        with pytest.raises(MissingBucketException):
            conn.storage.upload_file("no-such-bucket-x", tmp_path / "a.txt", "a.txt")


def test_a_bucket_name_s3_refuses_is_an_invalid_request_not_a_transient_failure(qarnot_emulator: Any) -> None:
    with connect(qarnot_emulator) as conn:
        with pytest.raises(InvalidRequestException, match="(?i)bucket name"):
            list(conn.storage.list_keys("bad bucket name!"))
