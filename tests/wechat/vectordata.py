"""Loading helpers for the WeChat sample vectors kept in tests/wechat/vectors/."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> dict[str, Any]:
    """Load one vector file from the in-repo copy."""
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def vectors(name: str, *kinds: str) -> list[Any]:
    """Return the verified vectors of the given kinds as pytest params named by id."""
    return [
        pytest.param(v, id=v["id"]) for v in load(name)["vectors"] if v.get("verified") is True and v["kind"] in kinds
    ]


def by_id(name: str, vector_id: str) -> dict[str, Any]:
    """Return one vector by id."""
    return next(v for v in load(name)["vectors"] if v["id"] == vector_id)


def tamper_last_block(b64: str) -> str:
    """Flip one bit in the last ciphertext block so padding / tag / tail checks must fail."""
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def flip_last_char(text: str) -> str:
    """Return text with its last character changed (a one-character tamper)."""
    return text[:-1] + ("1" if text[-1] == "0" else "0")
