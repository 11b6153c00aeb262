"""No secret, hash or token reaches the logs, at any level: the registry, dns and issuer run
at DEBUG, with every token and key configured (registry operator token, record-feed token the
dns service presents, credential and sealing keys, issuer operator token and encryption key),
through registration over gRPC and the acme-dns HTTP API, TXT updates (and a wrong password),
a TSIG-signed RFC 2136 UPDATE through the dns service, an ACME account, an issuance, and a
delivery token used to watch, get and export the certificate (and a wrong one refused); the
captured log is searched for every secret the run created or saw."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone.issuer.v1 import delivery_token_service_pb2 as dpb
from acmezone.issuer.v1 import delivery_token_service_pb2_grpc as dgrpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb
from acmezone.registry.v1 import tsig_key_service_pb2_grpc as key_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.sealing import SecretSealer
from acmezone_dns.dnssec.keys import write_key
from tests.dns.dnssec_support import make_keys
from tests.e2e.conftest import CHALLENGE_ZONE, Ports, running_system
from tests.issuer.conftest import AUTH, CA, ENCRYPTION_KEY, OPERATOR_TOKEN
from tests.registry.values import acme_digest

REGISTRY_OPERATOR_TOKEN = "registry-operator-token-for-the-log-check"
FEED_TOKEN = "record-feed-token-for-the-log-check"
CREDENTIAL_KEY = base64.urlsafe_b64encode(b"credential-key-for-the-log-check").decode()
REGISTRY_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"sealing-key-for-the-log-check!!!").decode()


def post(
    port: int, path: str, body: dict[str, str], headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    """One POST to the acme-dns HTTP API, JSON both ways."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **headers},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


async def test_no_secret_is_logged_at_debug(
    tmp_path: Path,
    e2e_ca: CA,
    ports: Ports,
    metrics_registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: dict[str, str] = {
        "issuer operator token": OPERATOR_TOKEN,
        "registry operator token": REGISTRY_OPERATOR_TOKEN,
        "record-feed token": FEED_TOKEN,
        "registry credential key": CREDENTIAL_KEY,
        "registry encryption key": REGISTRY_ENCRYPTION_KEY,
    }
    # The dns service signs the challenge zone, its key sealed in the key file.
    sealing_key = base64.urlsafe_b64encode(bytes(range(32))).decode()
    (signing_key,) = make_keys(tmp_path / "dnssec", [CHALLENGE_ZONE])
    write_key(signing_key, tmp_path / "dnssec", SecretSealer(bytes(range(32))))
    pem = signing_key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    secrets["DNSSEC private key"] = pem.splitlines()[2]
    secrets["DNSSEC sealing key"] = sealing_key.rstrip("=")
    operator = (("authorization", f"Bearer {REGISTRY_OPERATOR_TOKEN}"),)
    async with running_system(
        tmp_path,
        e2e_ca,
        ports,
        metrics_registry,
        registry_extra={
            "operator_token": REGISTRY_OPERATOR_TOKEN,
            "feed_token": FEED_TOKEN,
            "credential_key": CREDENTIAL_KEY,
            "encryption_key": REGISTRY_ENCRYPTION_KEY,
        },
        dns_extra={
            "registry_token": FEED_TOKEN,
            "dnssec_key_dir": tmp_path / "dnssec",
            "dnssec_sealing_key": sealing_key,
        },
        registry_token=REGISTRY_OPERATOR_TOKEN,
    ) as system:
        # The dns replica follows the guarded feed with the feed token (it answers below).
        http_port = system.registry.http_address.port
        status, registered = await asyncio.to_thread(
            post, http_port, "/register", {}, {"Authorization": f"Bearer {REGISTRY_OPERATOR_TOKEN}"}
        )
        assert status == 201, registered
        secrets["acme-dns API password"] = str(registered["password"])
        api_auth = {"X-Api-User": str(registered["username"])}
        update = {"subdomain": str(registered["subdomain"]), "txt": acme_digest("http")}
        status, _ = await asyncio.to_thread(
            post,
            http_port,
            "/update",
            update,
            {**api_auth, "X-Api-Key": secrets["acme-dns API password"]},
        )
        assert status == 200
        wrong_password = "W" * 20 + secrets["acme-dns API password"][20:]
        secrets["a wrong API password"] = wrong_password
        status, _ = await asyncio.to_thread(
            post, http_port, "/update", update, {**api_auth, "X-Api-Key": wrong_password}
        )
        assert status == 401
        async with grpc.aio.insecure_channel(str(system.registry.grpc_address)) as channel:
            registration = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
                reg_pb.CreateRegistrationRequest(registration_id="secret-check"),
                metadata=operator,
            )
            secrets["registration password"] = registration.password
            auth = (("x-api-user", registration.username), ("x-api-key", registration.password))
            await txt_grpc.TxtRecordServiceStub(channel).AddTxtValue(
                txt_pb.AddTxtValueRequest(
                    name="registrations/secret-check/txtRecord", value=acme_digest("grpc")
                ),
                metadata=auth,
            )
            key = await key_grpc.TsigKeyServiceStub(channel).CreateTsigKey(
                key_pb.CreateTsigKeyRequest(
                    parent=registration.name,
                    tsig_key=key_pb.TsigKey(algorithm=key_pb.TSIG_ALGORITHM_HMAC_SHA256),
                ),
                metadata=auth,
            )
            secrets["TSIG secret"] = key.secret
        stored = await system.registry.stores.registrations.get_registration("secret-check")
        assert stored is not None
        secrets["password hash"] = stored.password_hash.split("$")[-1]

        name = dns.name.from_text(key.key_name)
        keyring = {name: dns.tsig.Key(name, base64.b64decode(key.secret), dns.tsig.HMAC_SHA256)}
        update = dns.update.UpdateMessage(f"{CHALLENGE_ZONE}.")
        update.use_tsig(keyring)
        update.add(f"{registration.fulldomain}.", 60, "TXT", f'"{acme_digest("rfc2136")}"')
        reply = await dns.asyncquery.udp(update, "127.0.0.1", port=ports.dns, timeout=5)
        assert reply.rcode() == dns.rcode.NOERROR
        signed = await dns.asyncquery.udp(
            dns.message.make_query(f"{registration.fulldomain}.", "TXT", want_dnssec=True),
            "127.0.0.1",
            port=ports.dns,
            timeout=5,
        )
        assert any(r.rdtype == dns.rdatatype.RRSIG for r in signed.answer)

        client = system.client
        delegation = await client.certificates.CheckDelegation(
            pb.CheckDelegationRequest(domain="logs.example.test"), metadata=AUTH
        )
        await system.add_cname("logs.example.test", delegation.cname_target)
        account = await client.create_account()
        cert = await client.create_certificate(
            "logs", dns_names=["*.logs.example.test"], account=account.name
        )
        await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED)
        bundle = await client.certificates.ExportCertificate(
            pb.ExportCertificateRequest(name=cert.name), metadata=AUTH
        )
        key_lines = [
            line
            for line in bundle.private_key_pem.splitlines()
            if line and not line.startswith("-----")
        ]
        secrets["certificate private key"] = key_lines[1]

        issuer_channel = grpc.aio.insecure_channel(system.issuer.grpc_address)
        tokens = dgrpc.DeliveryTokenServiceStub(issuer_channel)
        delivery = await tokens.CreateDeliveryToken(
            dpb.CreateDeliveryTokenRequest(
                delivery_token=dpb.DeliveryToken(certificates=[cert.name]),
                delivery_token_id="logs-agents",
            ),
            metadata=AUTH,
        )
        secrets["delivery token"] = delivery.secret
        as_agent = (("authorization", f"Bearer {delivery.secret}"),)
        got = await client.certificates.GetCertificate(
            pb.GetCertificateRequest(name=cert.name), metadata=as_agent
        )
        assert got.state == pb.STATE_ISSUED
        await client.certificates.ExportCertificate(
            pb.ExportCertificateRequest(name=cert.name), metadata=as_agent
        )
        stream = client.certificates.WatchCertificate(
            pb.WatchCertificateRequest(name=cert.name), metadata=as_agent
        )
        async for _ in stream:
            break
        stream.cancel()
        forged = delivery.secret[:-8] + "AAAAAAAA"
        secrets["a wrong delivery token"] = forged
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.certificates.GetCertificate(
                pb.GetCertificateRequest(name=cert.name),
                metadata=(("authorization", f"Bearer {forged}"),),
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await issuer_channel.close()
        assert system.dns is not None
        assert system.dns.feed.feed_id  # the feed was followed with the feed token
    secrets["issuer encryption key"] = ENCRYPTION_KEY
    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert len(caplog.records) > 100, "the services logged at DEBUG"
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    leaked = [what for what, secret in secrets.items() if secret and secret in logged]
    assert leaked == []
