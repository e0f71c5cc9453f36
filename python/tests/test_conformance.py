"""Every conformance vector in tests/vectors/ through the Python binding, and the generated
event types kept in step with the Rust types."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, List, Tuple

import pytest

from courier_client import _native

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VECTORS = os.path.join(ROOT, "tests", "vectors")


def cases() -> List[Tuple[str, int, Any]]:
    out = []
    for stem in _native.vector_files():
        with open(os.path.join(VECTORS, f"{stem}.json")) as f:
            doc = json.load(f)
        for i, case in enumerate(doc["cases"]):
            out.append((stem, i, case))
    return out


def test_every_vector_file_has_a_runner() -> None:
    on_disk = sorted(n[:-5] for n in os.listdir(VECTORS) if n.endswith(".json"))
    assert on_disk == sorted(_native.vector_files())


@pytest.mark.parametrize("stem,index,case", cases(), ids=lambda v: v if isinstance(v, (str, int)) else "")
def test_vector(stem: str, index: int, case: Any) -> None:
    got = json.loads(_native.evaluate_vector(stem, json.dumps(case)))
    assert got == case


def test_generated_event_types_are_current() -> None:
    sys.path.insert(0, os.path.join(ROOT, "python"))
    try:
        import gen_events
    finally:
        sys.path.pop(0)
    schema = json.loads(_native.catalogue_schema())
    with open(gen_events.TARGET) as f:
        current = f.read()
    assert gen_events.render(schema) == current, "run python3 python/gen_events.py"
    for path, fill in ((gen_events.CLIENT, gen_events.render_client), (gen_events.TYPES, gen_events.render_types)):
        with open(path) as f:
            text = f.read()
        assert fill(schema, text) == text, f"{path}: run python3 python/gen_events.py"
