"""`acmezone-issuer`: load settings, configure logging, serve until SIGTERM."""

from __future__ import annotations

from acmezone_common.logs import configure_logging
from acmezone_common.runner import run
from acmezone_issuer.app import IssuerApp
from acmezone_issuer.settings import IssuerSettings


def main() -> None:
    """Run the issuer with settings from `ACMEZONE_ISSUER_*`."""
    settings = IssuerSettings()
    configure_logging(settings.log_level, settings.log_format)
    run(lambda: IssuerApp(settings), settings.shutdown_grace_seconds)


if __name__ == "__main__":
    main()
