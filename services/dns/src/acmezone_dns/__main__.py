"""`acmezone-dns`: serve the challenge zone. Configured by ACMEZONE_DNS_* environment variables."""

from __future__ import annotations

import argparse

import uvloop
from prometheus_client import CollectorRegistry

from acmezone_common import runner
from acmezone_common.logs import configure_logging
from acmezone_dns.settings import DnsSettings


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `acmezone-dns` command."""
    argparse.ArgumentParser(
        prog="acmezone-dns",
        description="acmezone dns: the authoritative DNS server of the ACME challenge zone, fed "
        "by the registry's record feed. Configured by ACMEZONE_DNS_* environment variables.",
    ).parse_args(argv)
    settings = DnsSettings()
    configure_logging(settings.log_level, settings.log_format)

    from acmezone_dns.app import DnsApp

    # uvloop: the DNS hot path spends most of its time in the loop's reader dispatch.
    runner.run(
        lambda: DnsApp(settings, CollectorRegistry(), freeze_gc=True, handle_sighup=True),
        settings.shutdown_grace_seconds,
        loop_factory=uvloop.new_event_loop,
    )


if __name__ == "__main__":
    main()
