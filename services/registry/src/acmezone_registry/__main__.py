"""`acmezone-registry`: serve the registry, or `acmezone-registry migrate` to only migrate."""

from __future__ import annotations

import argparse
import logging

from prometheus_client import CollectorRegistry

from acmezone_common import runner
from acmezone_common.logs import configure_logging
from acmezone_registry.settings import RegistrySettings

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `acmezone-registry` command."""
    parser = argparse.ArgumentParser(
        prog="acmezone-registry",
        description="acmezone registry: challenge subdomains, TXT values and the record feed. "
        "Configured by ACMEZONE_REGISTRY_* environment variables.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=("serve", "migrate"),
        help="serve (default) or only apply database migrations",
    )
    args = parser.parse_args(argv)
    settings = RegistrySettings()
    configure_logging(settings.log_level, settings.log_format)

    from acmezone_registry.storage import migrate
    from acmezone_registry.storage.database import Database

    if args.command == "migrate":
        migrate.upgrade(Database(settings.resolved_database_url()))
        return

    from acmezone_registry.app import RegistryApp

    runner.run(lambda: RegistryApp(settings, CollectorRegistry()), settings.shutdown_grace_seconds)


if __name__ == "__main__":
    main()
