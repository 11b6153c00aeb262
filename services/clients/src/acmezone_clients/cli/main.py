"""The `acmezone` console script; the commands live in `acmezone_clients.cli.commands`."""

from __future__ import annotations


def main() -> None:
    """Run the CLI."""
    from acmezone_clients.cli.commands import main as run

    raise SystemExit(run())
