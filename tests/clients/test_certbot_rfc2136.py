"""certbot-dns-rfc2136's exchanges with the dns service, replayed with dnspython (the library the
plugin itself uses; certbot is not installed here): its defaults (hmac-md5, TCP with UDP as the
fallback, port from the credentials file), its zone search (`_find_domain`: a TSIG-signed SOA query
with RD cleared for each candidate, longest first, until an answer is NOERROR, holds the SOA and
has AA set), then an UPDATE adding the TXT value relative to that zone and, at clean-up, one
deleting exactly that value. Every signed answer is verified with the key, as dnspython does for
the plugin."""

from __future__ import annotations

import asyncio

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

from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from tests.clients.test_nsupdate import Setup, dig_txt, setup
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
