"""The `acmezone` commands (filled in below)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one command."""
    return 0
