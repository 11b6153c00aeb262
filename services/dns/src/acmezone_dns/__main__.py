"""`acmezone-dns`: serve the challenge zone. Configured by ACMEZONE_DNS_* environment variables."""

from __future__ import annotations

import argparse

import uvloop
from prometheus_client import CollectorRegistry

from acmezone_common import runner
from acmezone_common.logs import configure_logging
from acmezone_dns.dnssec import cli as dnssec_cli
from acmezone_dns.settings import DnsSettings


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `acmezone-dns` command: serve, or (`dnssec ...`) manage keys."""
    parser = argparse.ArgumentParser(
        prog="acmezone-dns",
        description="acmezone dns: the authoritative DNS server of the ACME challenge zone, fed "
        "by the registry's record feed. Configured by ACMEZONE_DNS_* environment variables. "
        "With no command it serves.",
    )
    commands = parser.add_subparsers(dest="command")
    dnssec_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "dnssec":
        raise SystemExit(dnssec_cli.run(args))
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
