"""Bucket storage paths: result keys can never write outside the download directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_qarnot.client import QarnotException
from airflow_provider_qarnot.client.storage import _clean_prefix, _safe_target


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
