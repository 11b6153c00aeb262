"""The registry's acme-dns HTTP API driven exactly as the acme-dns clients operators run call it,
over HTTP and over HTTPS (a local CA the client trusts), and the result read back over DNS from a
dns service fed by the registry. certbot with a real acme-dns hook over HTTPS is in
tests/e2e/test_certbot.py.

None of these clients can run here, so each test replays its requests (method, path, headers,
body bytes), its status checks, its credential file and its response parsing, from the client's
source:

- goacmedns, used by lego's acme-dns provider and cert-manager's acmeDNS solver (Debian's lego
  4.9 is built without the acme-dns provider: "unrecognized DNS provider: acme-dns"): JSON bodies
  marshalled from Go structs without tags (`{"SubDomain":…,"Txt":…}`), `Content-Type:
  application/json`, 201 from /register and 200 from /update required, the update's `txt` echoed;
  lego keeps `{"<domain>": {fulldomain, subdomain, username, password, server_url}}`, and
  cert-manager reads its account secret (the /register answer keyed by domain) into the same
  struct.
- certbot's acme-dns hook (joohoi's acme-dns-auth.py, python-requests): POST /register with no
  body, status exactly 201; the answer stored whole per domain in its JSON storage file;
  POST /update with `json.dumps` of `{"subdomain", "txt"}` and status exactly 200.
- acme.sh's dns_acmedns.sh (curl through `_post`): an empty-bodied POST /register with curl's
  default form content type, the credentials cut out of the one-line JSON answer with
  `_egrep_o '"username":"[^"]*"'` (and the older sed form), then an update whose body is a
  hand-written JSON string, succeeding only when the answer contains `"<txtvalue>"`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from acmezone_common.addresses import HostPort
from acmezone_common.testing import wait_for_serving
from tests.common.local_ca import LocalCa
from tests.dns.conftest import query_udp, running_dns
from tests.registry.conftest import running_registry
from tests.registry.values import acme_digest


@dataclass
class Api:
    http: HostPort
    dns: HostPort
    grpc: str = ""
    ca_file: Path | None = None  # set when the API serves HTTPS: the CA clients trust

    @property
    def base_url(self) -> str:
        if self.ca_file is not None:
            return f"https://localhost:{self.http.port}"
        return f"http://{self.http}"

    def connection(self) -> http.client.HTTPConnection:
        """A connection as the client opens one: HTTPS verified against `ca_file` for the
        name `localhost` (what the API's certificate names), or plain HTTP."""
        if self.ca_file is None:
            return http.client.HTTPConnection(self.http.host, self.http.port, timeout=10)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return http.client.HTTPSConnection("localhost", self.http.port, context=context, timeout=10)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """One POST with exactly these headers (http.client adds Host and Content-Length)."""

        def send() -> tuple[int, bytes]:
            connection = self.connection()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        return await asyncio.to_thread(send)

    async def txt(self, name: str) -> list[str]:
        reply = await query_udp(self.dns, name)
        return [b"".join(rdata.strings).decode() for rrset in reply.answer for rdata in rrset]


@pytest.fixture(params=["http", "https"])
async def api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    """The API over plain HTTP, and over HTTPS with a certificate from a local CA that the
    client trusts (acme-dns serves either; each client's flow runs against both)."""
    https: dict[str, Path] = {}
    ca_file = None
    if request.param == "https":
        ca = LocalCa(tmp_path / "api-ca")
        issued = ca.issue("api")
        https = {"http_tls_cert_file": issued.cert_file, "http_tls_key_file": issued.key_file}
        ca_file = ca.cert_file
    async with (
        running_registry(tmp_path, **https) as registry,
        running_dns(
            tmp_path,
            registry_target=str(registry.grpc_address),
            dns_addresses=["127.0.0.1:0"],
            txt_ttl=0,
        ) as dns_app,
    ):
        await wait_for_serving(str(dns_app.grpc_address))
        yield Api(
            registry.http_address, dns_app.dns_addresses[0], str(registry.grpc_address), ca_file
        )


async def eventually_txt(api: Api, name: str, value: str) -> None:
    for _ in range(200):
        if value in await api.txt(name):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{value} never appeared at {name}")


async def test_goacmedns_as_lego_and_cert_manager_use_it(api: Api, tmp_path: Path) -> None:
    go_headers = {
        "Content-Type": "application/json",
        "User-Agent": "goacmedns/0.1.1",
        "Accept-Encoding": "gzip",
    }
    # RegisterAccount(nil): no body at all; then with allowFrom, Go's field name as the key.
    status, body = await api.post("/register", b"", go_headers)
    assert status == 201
    status, body = await api.post(
        "/register", json.dumps({"AllowFrom": ["127.0.0.1/32"]}).encode(), go_headers
    )
    assert status == 201
    registered = json.loads(body)
    # lego's storage file: goacmedns.Account per domain, with server_url added by the client.
    storage = tmp_path / "lego-acme-dns.json"
    storage.write_text(
        json.dumps(
            {
                "example.test": {
                    "fulldomain": registered["fulldomain"],
                    "subdomain": registered["subdomain"],
                    "username": registered["username"],
                    "password": registered["password"],
                    "server_url": api.base_url,
                }
            }
        )
    )
    # cert-manager's account secret: the /register answer keyed by domain, read into the same
    # struct (unknown keys such as allowfrom ignored).
    cert_manager_secret = json.dumps({"example.test": registered}).encode()
    for account in (
        json.loads(storage.read_text())["example.test"],
        json.loads(cert_manager_secret)["example.test"],
    ):
        value = acme_digest(account.get("server_url", "cert-manager"))
        status, body = await api.post(
            "/update",
            json.dumps(
                {"SubDomain": account["subdomain"], "Txt": value}, separators=(",", ":")
            ).encode(),
            {**go_headers, "X-Api-User": account["username"], "X-Api-Key": account["password"]},
        )
        assert status == 200
        assert json.loads(body)["txt"] == value
        await eventually_txt(api, account["fulldomain"], value)


async def test_certbot_acme_dns_hook(api: Api, tmp_path: Path) -> None:
    requests_headers = {
        "User-Agent": "python-requests/2.31.0",
        "Accept-Encoding": "gzip, deflate",
        "Accept": "*/*",
        "Connection": "keep-alive",
    }
    # requests.post(url + "/register"): Content-Length 0, no content type.
    status, body = await api.post("/register", b"", requests_headers)
    assert status == 201  # the hook accepts exactly 201
    account = json.loads(body)
    storage = tmp_path / "acmedns.json"
    storage.write_text(json.dumps({"example.test": account}))
    # The ALLOW_FROM variant: json.dumps body, still no content type.
    status, _ = await api.post(
        "/register", json.dumps({"allowfrom": ["127.0.0.0/8"]}).encode(), requests_headers
    )
    assert status == 201
    stored = json.loads(storage.read_text())["example.test"]
    value = acme_digest("certbot")
    status, body = await api.post(
        "/update",
        json.dumps({"subdomain": stored["subdomain"], "txt": value}).encode(),
        {
            **requests_headers,
            "X-Api-User": stored["username"],
            "X-Api-Key": stored["password"],
            "Content-Type": "application/json",
        },
    )
    assert status == 200  # the hook accepts exactly 200
    json.loads(body)  # its error path calls res.json(), so every answer is JSON
    await eventually_txt(api, stored["fulldomain"], value)
    # A wrong key: not 200, and still a JSON body the hook can print.
    status, body = await api.post(
        "/update",
        json.dumps({"subdomain": stored["subdomain"], "txt": value}).encode(),
        {
            **requests_headers,
            "X-Api-User": stored["username"],
            "X-Api-Key": "x" * 40,
            "Content-Type": "application/json",
        },
    )
    assert status != 200
    json.loads(body)


def _egrep_o(pattern: str, text: str) -> list[str]:
    """acme.sh's `_egrep_o`: `grep -o -E`, every match on every line."""
    return [m.group(0) for line in text.splitlines() for m in re.finditer(pattern, line)]


async def test_acme_sh_dns_acmedns(api: Api) -> None:
    curl_headers = {
        "User-Agent": "acme.sh/3.0.7 (https://github.com/acmesh-official/acme.sh)",
        "Accept": "*/*",
        # curl --data sets this when _post is given no content type
        "Content-Type": "application/x-www-form-urlencoded",
    }
    status, raw = await api.post("/register", b"", curl_headers)
    assert status == 201
    response = raw.decode()
    assert "\n" not in response.strip()  # one line: acme.sh's parsing needs that

    def field(name: str) -> str:
        # _egrep_o '"username":"[^"]*"' | cut -d : -f 2 | tr -d '"'
        found = _egrep_o(f'"{name}":"[^"]*"', response)
        assert len(found) == 1, (name, response)
        egrep = found[0].split(":")[1].replace('"', "")
        # the older form: sed -n 's/^{.*\"username\":[ ]*\"\([^\"]*\)\".*}/\1/p'
        sed = re.match(rf'^{{.*"{name}":[ ]*"([^"]*)".*}}$', response.strip())
        assert sed is not None
        assert sed.group(1) == egrep
        return egrep

    username, password = field("username"), field("password")
    subdomain, fulldomain = field("subdomain"), field("fulldomain")
    txtvalue = acme_digest("acme.sh")
    data = f'{{"subdomain":"{subdomain}", "txt": "{txtvalue}"}}'
    status, raw = await api.post(
        "/update",
        data.encode(),
        {**curl_headers, "X-Api-User": username, "X-Api-Key": password},
    )
    assert status == 200
    # dns_acmedns_add: `echo "$response" | grep "\"$txtvalue\""` or "invalid response"
    assert f'"{txtvalue}"' in raw.decode()
    await eventually_txt(api, fulldomain, txtvalue)
