"""The exception classes against tests/vectors/errors.json: every code the core reports maps
to the class the file lists (the category and `retryable` are the core's, checked by
test_conformance.py), and the class tree has the file's names, parents and builtin bases."""

from __future__ import annotations

import builtins
import json
import os
from typing import Any, Dict, List

import pytest

import courier_client
from courier_client import errors

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "vectors", "errors.json")

with open(VECTORS) as f:
    DOC: Dict[str, Any] = json.load(f)
CASES: List[Dict[str, Any]] = DOC["cases"]
CLASSES: List[Dict[str, Any]] = DOC["classes"]


@pytest.mark.parametrize("case", CASES, ids=[c["code"] for c in CASES])
def test_every_code_raises_its_class(case: Dict[str, Any]) -> None:
    e = errors._from_native(case["code"], case["category"], case["retryable"], "m", None, None, 1500, None, 429)
    assert type(e).__name__ == case["python"]
    assert (e.code, e.category, e.retryable, e.retry_after, e.status) == (
        case["code"],
        case["category"],
        case["retryable"],
        1.5,
        429,
    )
    assert isinstance(e, courier_client.CourierError)


@pytest.mark.parametrize("spec", CLASSES, ids=[c["name"] for c in CLASSES])
def test_class_tree(spec: Dict[str, Any]) -> None:
    cls = getattr(courier_client, spec["name"])
    assert cls.__name__ == spec["name"]
    bases = [b.__name__ for b in cls.__bases__]
    want = ([spec["parent"]] if spec["parent"] else ["Exception"]) + (
        [spec["python_builtin"]] if "python_builtin" in spec else []
    )
    assert bases == want
    if "python_builtin" in spec:
        assert issubclass(cls, getattr(builtins, spec["python_builtin"]))
    # Built without the core, a class still says which category it stands for.
    assert cls("m").category == spec["category"]


def test_every_public_error_class_is_in_the_file() -> None:
    public = {n for n in courier_client.__all__ if n.endswith("Error")}
    assert public == {c["name"] for c in CLASSES}
    assert set(errors.__all__) == public


def test_unknown_category_falls_back_to_the_base_class() -> None:
    e = errors._from_native("SOMETHING_NEW", "something_new", False, "m", None, None, None, None, None)
    assert type(e) is courier_client.CourierError


def test_details_cross_from_the_core() -> None:
    e = errors._from_native(
        "CONNECTION_LIMIT_EXCEEDED", "rate_limited", False, "too many", None, None, None, "user", 429
    )
    assert isinstance(e, courier_client.RateLimitedError) and e.limit_type == "user" and e.retry_after is None
    v = errors._from_native("PAYLOAD_TOO_LARGE", "validation", False, "big", None, None, None, None, None)
    assert isinstance(v, courier_client.PayloadTooLargeError) and isinstance(v, ValueError)
    assert (v.field, v.reason) == ("data", "too_large")
    assert str(v) == "PAYLOAD_TOO_LARGE (field `data`): big"
