"""certbot-dns-rfc2136's exchanges with the dns service, replayed with dnspython (the library the
plugin itself uses; certbot is not installed here): its defaults (hmac-md5, TCP with UDP as the
fallback, port from the credentials file), its zone search (`_find_domain`: a TSIG-signed SOA query
with RD cleared for each candidate, longest first, until an answer is NOERROR, holds the SOA and
has AA set), then an UPDATE adding the TXT value relative to that zone and, at clean-up, one
deleting exactly that value. Every signed answer is verified with the key, as dnspython does for
the plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
import grpc
import pytest

from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from acmezone_common.testing import wait_for_serving
from acmezone_dns.app import DnsApp
from tests.clients.test_nsupdate import Setup, dig_txt, setup
from tests.dns.conftest import running_dns
from tests.registry.conftest import running_registry
from tests.registry.test_dns_updates import new_client
from tests.registry.values import acme_digest

__all__ = ["setup"]


def base_domain_name_guesses(name: str) -> list[str]:
    """certbot's dns_common.base_domain_name_guesses: the name and each parent, longest first."""
    labels = name.rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def query_soa(setup: Setup, keyring: dict[dns.name.Name, dns.tsig.Key], name: str) -> bool:
    domain = dns.name.from_text(name)
    request = dns.message.make_query(domain, dns.rdatatype.SOA, dns.rdataclass.IN)
    request.flags ^= dns.flags.RD
    request.use_tsig(keyring, algorithm=dns.tsig.HMAC_MD5)
    try:
        response = dns.query.tcp(request, setup.dns.host, 10, setup.dns.port)
    except (OSError, dns.exception.Timeout):
        response = dns.query.udp(request, setup.dns.host, 10, setup.dns.port)
    return bool(
        response.rcode() == dns.rcode.NOERROR
        and response.get_rrset(response.answer, domain, dns.rdataclass.IN, dns.rdatatype.SOA)
        and response.flags & dns.flags.AA
    )


def change(
    setup: Setup,
    keyring: dict[dns.name.Name, dns.tsig.Key],
    zone: str,
    record_name: str,
    value: str,
    *,
    add: bool,
) -> int:
    rel = dns.name.from_text(record_name).relativize(dns.name.from_text(zone))
    update = dns.update.Update(zone, keyring=keyring, keyalgorithm=dns.tsig.HMAC_MD5)
    if add:
        update.add(rel, 60, dns.rdatatype.TXT, value)
    else:
        update.delete(rel, dns.rdatatype.TXT, value)
    response = dns.query.tcp(update, setup.dns.host, 10, setup.dns.port)
    return int(response.rcode())


async def test_certbot_dns_rfc2136_finds_the_zone_adds_and_deletes(setup: Setup) -> None:
    client = await new_client(setup.channel, key_pb2.TSIG_ALGORITHM_HMAC_MD5)
    keyring = client.keyring()
    record_name = f"_acme-challenge.{client.fqdn}"
    guesses = base_domain_name_guesses(record_name)
    zone = ""
    for guess in guesses:  # _find_domain stops at the first authoritative SOA answer
        if await asyncio.to_thread(query_soa, setup, keyring, guess):
            zone = guess
            break
    assert zone == "acme.example.test"
    value = acme_digest("certbot-rfc2136")
    rcode = await asyncio.to_thread(change, setup, keyring, zone, record_name, value, add=True)
    assert rcode == dns.rcode.NOERROR
    assert await dig_txt(setup.dns, record_name) == [value]
    rcode = await asyncio.to_thread(change, setup, keyring, zone, record_name, value, add=False)
    assert rcode == dns.rcode.NOERROR
    assert await dig_txt(setup.dns, record_name) == []


@pytest.fixture
async def delegating(tmp_path: Path) -> AsyncIterator[tuple[Setup, DnsApp]]:
    """Registry with UPDATE_FOLLOW_CNAMES on, dns serving the example.test zone file."""
    async with (
        running_registry(tmp_path, update_follow_cnames=True) as registry,
        running_dns(
            tmp_path,
            registry_target=str(registry.grpc_address),
            dns_addresses=["127.0.0.1:0"],
            txt_ttl=0,
            zone_reload_interval_seconds=0,
        ) as dns_app,
        grpc.aio.insecure_channel(str(registry.grpc_address)) as channel,
    ):
        await wait_for_serving(str(dns_app.grpc_address))
        yield Setup(dns_app.dns_addresses[0], channel, str(registry.grpc_address)), dns_app


async def add_cname(app: DnsApp, tmp_path: Path, owner: str, target: str) -> None:
    """The domain owner adds a CNAME to the zone file (picked up live)."""
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text(zone_file.read_text() + f"{owner} CNAME {target}\n")
    assert await app.reloader.reload()


async def find_zone(setup: Setup, keyring: dict[dns.name.Name, dns.tsig.Key], name: str) -> str:
    for guess in base_domain_name_guesses(name):
        if await asyncio.to_thread(query_soa, setup, keyring, guess):
            return guess
    return ""


async def test_with_follow_cnames_an_update_of_the_customer_zone_reaches_the_target(
    delegating: tuple[Setup, DnsApp], tmp_path: Path
) -> None:
    """What certbot-dns-rfc2136 does for `shop.example.test`: the zone search stops at the
    static zone example.test, and the UPDATE names `_acme-challenge.shop.example.test`, a
    CNAME to the key's own name: it is applied there, and answered through the CNAME."""
    setup, app = delegating
    client = await new_client(setup.channel, key_pb2.TSIG_ALGORITHM_HMAC_MD5)
    keyring = client.keyring()
    alias = "_acme-challenge.shop.example.test"
    await add_cname(app, tmp_path, f"{alias}.", client.fqdn.rstrip(".") + ".")
    zone = await find_zone(setup, keyring, alias)
    assert zone == "example.test"
    value = acme_digest("delegated")
    rcode = await asyncio.to_thread(change, setup, keyring, zone, alias, value, add=True)
    assert rcode == dns.rcode.NOERROR
    assert await dig_txt(setup.dns, client.fqdn) == [value]
    assert value in await dig_txt(setup.dns, alias)
    rcode = await asyncio.to_thread(change, setup, keyring, zone, alias, value, add=False)
    assert rcode == dns.rcode.NOERROR
    assert await dig_txt(setup.dns, client.fqdn) == []


async def test_a_cname_to_another_registration_is_refused(
    delegating: tuple[Setup, DnsApp], tmp_path: Path
) -> None:
    setup, app = delegating
    mine = await new_client(setup.channel, key_pb2.TSIG_ALGORITHM_HMAC_MD5)
    theirs = await new_client(setup.channel, key_pb2.TSIG_ALGORITHM_HMAC_MD5)
    alias = "_acme-challenge.theirs.example.test"
    await add_cname(app, tmp_path, f"{alias}.", theirs.fqdn.rstrip(".") + ".")
    value = acme_digest("not-mine")
    rcode = await asyncio.to_thread(
        change, setup, mine.keyring(), "example.test", alias, value, add=True
    )
    assert rcode == dns.rcode.REFUSED
    assert await dig_txt(setup.dns, theirs.fqdn) == []
    # A name of the zone that is no CNAME into the challenge zone: NOTAUTH, as without the
    # setting (the registry is authoritative for nothing else there).
    rcode = await asyncio.to_thread(
        change, setup, mine.keyring(), "example.test", "www.example.test", value, add=True
    )
    assert rcode == dns.rcode.NOTAUTH


async def test_without_follow_cnames_the_customer_zone_is_notauth(setup: Setup) -> None:
    """The default: an UPDATE naming example.test gets NOTAUTH, as before."""
    client = await new_client(setup.channel, key_pb2.TSIG_ALGORITHM_HMAC_MD5)
    rcode = await asyncio.to_thread(
        change,
        setup,
        client.keyring(),
        "example.test",
        "_acme-challenge.www.example.test",
        acme_digest("x"),
        add=True,
    )
    assert rcode == dns.rcode.NOTAUTH
