"""`acmezone-dns dnssec ...`: make keys, print the DS record for the parent, move keys through a
rollover, sign a whole zone offline (`sign-zone`, see `zone_file`). Reads the same settings as
the service (ACMEZONE_DNS_DNSSEC_KEY_DIR, ACMEZONE_DNS_DNSSEC_SEALING_KEY), so a key made here
opens in the service.

Every command prints what it did and never a private key. The service reads key files at start:
restart the replicas (one at a time) after a change, as docs/dnssec.md describes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dns.name
import dns.tsig

from acmezone_common.addresses import HostPort
from acmezone_common.keyfiles import private_dir
from acmezone_common.sealing import SecretSealer
from acmezone_dns.dnssec import zone_file
from acmezone_dns.dnssec.keys import (
    ALGORITHMS,
    KeyFileError,
    Role,
    State,
    ZoneKey,
    generate,
    read_keys,
    write_key,
)
from acmezone_dns.dnssec.setup import sealer_from
from acmezone_dns.dnssec.zone_file import ZoneContentError
from acmezone_dns.settings import DnsSettings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `dnssec` command and its subcommands."""
    parser = commands.add_parser("dnssec", help="DNSSEC signing keys")
    parser.add_argument(
        "--key-dir",
        type=Path,
        help="the key directory (default: ACMEZONE_DNS_DNSSEC_KEY_DIR)",
    )
    sub = parser.add_subparsers(dest="dnssec_command", required=True)
    keygen = sub.add_parser("keygen", help="make a key and write its file")
    keygen.add_argument("--zone", required=True, help="the zone the key signs")
    keygen.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="ecdsap256sha256")
    keygen.add_argument("--role", choices=[r.value for r in Role], default=Role.CSK.value)
    keygen.add_argument("--state", choices=[s.value for s in State], default=State.ACTIVE.value)
    ds = sub.add_parser("ds", help="print the DS records to hand to the parent zone")
    ds.add_argument("--zone", help="only this zone's")
    sub.add_parser("list", help="list the keys: zone, tag, algorithm, role, state")
    state = sub.add_parser("state", help="move a key to another state (a rollover step)")
    state.add_argument("tag", type=int, help="the key tag")
    state.add_argument("new_state", choices=[s.value for s in State])
    state.add_argument("--zone", help="the key's zone, when two zones have keys of that tag")
    sign = sub.add_parser(
        "sign-zone",
        help="write a zone fully signed with the directory's keys (NSEC chain, every RRset)",
    )
    source = sign.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        dest="source",
        metavar="HOST:PORT",
        help="transfer the zone (AXFR) from this server, e.g. a running replica",
    )
    source.add_argument("--zone-file", type=Path, help="read the zone from this zone file")
    sign.add_argument("--zone", help="the zone (default: ACMEZONE_DNS_ZONE)")
    sign.add_argument(
        "--tsig-key-file",
        type=Path,
        help="a file holding the transfer's TSIG key as name:algorithm:base64-secret "
        "(default: the first of ACMEZONE_DNS_TRANSFER_KEYS, if any)",
    )
    sign.add_argument("--output", "-o", type=Path, help="where to write it (default: stdout)")
    sign.add_argument(
        "--validity",
        type=int,
        help="signature validity, seconds "
        "(default: ACMEZONE_DNS_DNSSEC_SIGNATURE_VALIDITY_SECONDS)",
    )


def run(args: argparse.Namespace) -> int:
    """Carry out a `dnssec` command; returns the exit status."""
    settings = DnsSettings()
    directory: Path | None = args.key_dir or settings.dnssec_key_dir
    if directory is None:
        print("no key directory: give --key-dir or ACMEZONE_DNS_DNSSEC_KEY_DIR", file=sys.stderr)
        return 2
    sealer = sealer_from(settings)
    try:
        if args.dnssec_command == "keygen":
            private_dir(directory)
            key = generate(
                dns.name.from_text(args.zone),
                ALGORITHMS[args.algorithm],
                Role(args.role),
                State(args.state),
            )
            path = write_key(key, directory, sealer)
            print(f"{path}: {_describe(key)}{'' if sealer else ' (not sealed)'}")
            return 0
        keys = read_keys(directory, sealer)
        if args.dnssec_command == "sign-zone":
            return _sign_zone(args, keys, settings)
        if args.dnssec_command == "list":
            for key in keys:
                print(_describe(key))
            return 0
        if args.dnssec_command == "ds":
            zone = dns.name.from_text(args.zone) if args.zone else None
            for key in keys:
                if key.role is not Role.ZSK and (zone is None or key.zone == zone):
                    print(f"{key.zone.to_text()} IN DS {key.ds().to_text()}")
            return 0
        return _set_state(args, keys, directory, sealer)
    except (KeyFileError, ZoneContentError) as exc:
        print(exc, file=sys.stderr)
        return 1


def _sign_zone(args: argparse.Namespace, keys: list[ZoneKey], settings: DnsSettings) -> int:
    origin = dns.name.from_text(args.zone or settings.zone)
    zone_keys = [k for k in keys if k.zone == origin]
    if not zone_keys:
        print(f"no keys for zone {origin} in the key directory", file=sys.stderr)
        return 1
    if args.zone_file is not None:
        content = zone_file.read_zone_file(str(args.zone_file), origin)
        what = str(args.zone_file)
    else:
        try:
            where = HostPort.parse(args.source)
            tsig = _tsig_key(args.tsig_key_file, settings)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        content = zone_file.transfer(where.host, where.port, origin, tsig)
        what = f"AXFR from {where}"
    signed = zone_file.sign(
        content,
        zone_keys,
        validity=args.validity or settings.dnssec_signature_validity_seconds,
        dnskey_ttl=settings.dnssec_dnskey_ttl,
    )
    text = zone_file.to_text(signed)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    names = len(signed.nodes)
    print(
        f"{origin}: {names} names from {what} signed with "
        + ", ".join(f"{k.role.value} {k.tag}" for k in zone_keys if k.state is State.ACTIVE),
        file=sys.stderr,
    )
    return 0


def _tsig_key(path: Path | None, settings: DnsSettings) -> dns.tsig.Key | None:
    """The TSIG key of a transfer: the file's, else the first configured transfer key."""
    from acmezone_dns.transfer import parse_key

    if path is not None:
        try:
            return parse_key(path.read_text())
        except OSError as exc:
            raise ValueError(f"TSIG key file {path}: {exc.strerror}") from None
    if settings.transfer_keys:
        return parse_key(settings.transfer_keys[0].get_secret_value())
    return None


def _set_state(
    args: argparse.Namespace, keys: list[ZoneKey], directory: Path, sealer: SecretSealer | None
) -> int:
    zone = dns.name.from_text(args.zone) if args.zone else None
    matches = [k for k in keys if k.tag == args.tag and (zone is None or k.zone == zone)]
    if len(matches) != 1:
        print(f"{len(matches)} keys have tag {args.tag}: give --zone", file=sys.stderr)
        return 1
    key = matches[0]
    moved = ZoneKey(key.zone, key.role, State(args.new_state), key.private_key, key.dnskey)
    write_key(moved, directory, sealer)
    print(_describe(moved))
    return 0


def _describe(key: ZoneKey) -> str:
    return (
        f"{key.zone.to_text()} tag {key.tag} algorithm {key.algorithm} "
        f"{key.role.value} {key.state.value}"
    )
