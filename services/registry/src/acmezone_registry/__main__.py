"""`acmezone-registry`: serve the registry; `migrate` only migrates; `import-acme-dns --from URL`
takes over an acme-dns installation's registrations (see `acme_dns_import`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from prometheus_client import CollectorRegistry

from acmezone_common import runner
from acmezone_common.logs import configure_logging
from acmezone_common.sealing import SecretSealer
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
        choices=("serve", "migrate", "import-acme-dns"),
        help="serve (default), only apply database migrations, or import an acme-dns database",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="import-acme-dns: the acme-dns database, sqlite:///path/acme-dns.db or "
        "postgresql://user:pass@host/db",
    )
    args = parser.parse_args(argv)
    if args.command == "import-acme-dns" and not args.source:
        parser.error("import-acme-dns needs --from URL (the acme-dns database)")
    settings = RegistrySettings()
    configure_logging(settings.log_level, settings.log_format)

    from acmezone_registry.storage import migrate
    from acmezone_registry.storage.database import Database

    if args.command == "migrate":
        migrate.upgrade(Database(settings.resolved_database_url()), _sealer(settings))
        return
    if args.command == "import-acme-dns":
        sys.exit(_import_acme_dns(settings, args.source))

    from acmezone_registry.app import RegistryApp

    runner.run(lambda: RegistryApp(settings, CollectorRegistry()), settings.shutdown_grace_seconds)


def _import_acme_dns(settings: RegistrySettings, source: str) -> int:
    """Migrate, import, and print what happened; the exit status says whether it landed."""
    from acmezone_registry.acme_dns_import import SourceError, import_acme_dns
    from acmezone_registry.storage import migrate
    from acmezone_registry.storage.database import Database

    database = Database(settings.resolved_database_url())
    migrate.upgrade(database, _sealer(settings))
    started = time.monotonic()
    try:
        report = import_acme_dns(
            source, database, settings.zone, reserved=tuple(settings.reserved_subdomains)
        )
    except SourceError as exc:
        print(f"import-acme-dns: {exc}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - started
    if not report.committed and report.refusal_count:
        print(
            f"import-acme-dns: nothing imported: {report.refusal_count} record(s) refused",
            file=sys.stderr,
        )
        for reason in report.refusals:
            print(f"  {reason}", file=sys.stderr)
        if report.refusal_count > len(report.refusals):
            print(f"  ... and {report.refusal_count - len(report.refusals)} more", file=sys.stderr)
        return 1
    print(
        f"imported {report.imported} registration(s) with {report.txt_values} TXT value(s); "
        f"{report.already_present} already present; feed revision {report.revision}; "
        f"{elapsed:.1f} s"
    )
    return 0


def _sealer(settings: RegistrySettings) -> SecretSealer:
    key = settings.encryption_key
    return SecretSealer.from_setting(key.get_secret_value() if key else None, settings.data_dir)


if __name__ == "__main__":
    main()
