"""How every bench marks a figure against its target, so all benches read the same way."""

from __future__ import annotations


def verdict(ok: bool) -> str:
    """PASS when the target is met, MISS when not (a miss is reported, never raised)."""
    return "PASS" if ok else "MISS"
