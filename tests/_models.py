"""Shared by the reliability suites: a bundled model's directory, or a clean skip."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402  (bench/fuzz.py)


def bundled(name):
    path = fuzz.model_path(name)
    if path is None:
        pytest.skip(f"bundled model {name!r} is not in src/bitsback/zoo/ (it is trained separately)")
    return path
