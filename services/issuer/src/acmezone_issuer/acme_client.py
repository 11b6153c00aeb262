"""An asyncio face on certbot's `acme` package, one small request per method.

The reconciler persists its state between ACME requests, so this module offers the steps of RFC
8555 one at a time (place an order, read it, read an authorization, answer a challenge,
finalize, download) instead of acme's all-in-one helpers. Each step runs `acme`'s blocking
`ClientNetwork` in a worker thread (`asyncio.to_thread`), counts the HTTP requests it made by
endpoint and status, and turns failures into the issuer's `IssuanceError`s carrying the CA's
problem document in full.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import challenges, client, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.interfaces import JSONDeSerializable
from josepy.json_util import field as jose_field
from josepy.jwa import ES256, ES384, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from acmezone_issuer.errors import (
    AcmeProblemError,
    AcmeUnavailableError,
    IssuanceError,
)
from acmezone_issuer.keys import PrivateKey
from acmezone_issuer.metrics import IssuerMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

_endpoint: contextvars.ContextVar[str] = contextvars.ContextVar("acme_endpoint", default="")
_USER_AGENT = "acmezone-issuer/0.1 acme-python"
_TIMEOUT_SECONDS = 30


@challenges.ChallengeResponse.register
class DNSAccount01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer to a dns-account-01 challenge."""

    typ = "dns-account-01"


@challenges.Challenge.register
class DNSAccount01(challenges.DNS01):
    """dns-account-01 (draft-ietf-acme-dns-account-label): dns-01's TXT value at the account's
    own label. acme 5.9 does not know the type; without this class it would parse as
    `UnrecognizedChallenge`, which has neither a token nor a response."""

    response_cls = DNSAccount01Response
    typ = response_cls.typ


@challenges.ChallengeResponse.register
class DNSPersist01Response(challenges.ChallengeResponse):
    """The (empty) answer to a dns-persist-01 challenge."""

    typ = "dns-persist-01"

    def __bool__(self) -> bool:
        # Without fields the object is an empty mapping, hence falsy, and acme's network layer
        # would send it as POST-as-GET (an empty body), which reads the challenge instead of
        # answering it.
        return True


@challenges.Challenge.register
class DNSPersist01(challenges.Challenge):
    """dns-persist-01 (draft-ietf-acme-dns-persist): no token; the CA names the issuer domain
    names it accepts in the record (and the account URI it expects)."""

    typ = "dns-persist-01"
    issuer_domain_names: tuple[str, ...] = jose_field(
        "issuer-domain-names", omitempty=True, decoder=tuple, default=()
    )
    account_uri: str = jose_field("accounturi", omitempty=True, default="")


class AcmeStatus(StrEnum):
    """The statuses RFC 8555 section 7.1.6 gives orders, authorizations, challenges and
    accounts, as `Order.status`, `Authorization.status` and `status_name` spell them."""

    PENDING = "pending"
    READY = "ready"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    EXPIRED = "expired"
    REVOKED = "revoked"


def status_name(status: object) -> str:
    """`pending`, `valid`, ... for an acme `Status` constant (its str() is `Status(pending)`)."""
    return str(getattr(status, "name", status))


def jwk_for(key: PrivateKey) -> tuple[JWK, JWASignature]:
    """The JWK and signature algorithm for an account key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    if isinstance(key.curve, ec.SECP384R1):
        return JWKEC(key=key), ES384
    return JWKEC(key=key), ES256


class _Network(client.ClientNetwork):
    """acme's network layer, plus a trust bundle and request counting by endpoint."""

    def __init__(
        self,
        key: PrivateKey | None,
        metrics: IssuerMetrics,
        ca_bundle: Path | None,
        account_url: str = "",
    ) -> None:
        jwk, alg = jwk_for(key) if key is not None else (None, RS256)
        super().__init__(
            key=jwk,
            alg=alg,
            user_agent=_USER_AGENT,
            timeout=_TIMEOUT_SECONDS,
            account=messages.RegistrationResource(uri=account_url) if account_url else None,
        )
        # requests takes a bundle path where acme expects a bool.
        self.verify_ssl = str(ca_bundle) if ca_bundle else True  # type: ignore[assignment]
        self._metrics = metrics

    @classmethod
    def _check_response(
        cls, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        """acme's check, keeping the Retry-After of an error (rateLimited asks for one)."""
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as error:
            retry_after = _retry_after(response)
            if retry_after is not None:
                object.__setattr__(error, "acmezone_retry_after", retry_after)
            raise

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        endpoint = _endpoint.get() or "directory"
        if method == "HEAD":
            endpoint = "newNonce"
        try:
            response = super()._send_request(method, url, *args, **kwargs)
        except requests.RequestException:
            self._metrics.acme_requests.labels(endpoint, "error").inc()
            raise
        self._metrics.acme_requests.labels(endpoint, str(response.status_code)).inc()
        return response


@contextmanager
def _calling(endpoint: str) -> Iterator[None]:
    token = _endpoint.set(endpoint)
    try:
        yield
    finally:
        _endpoint.reset(token)


def describe_problem(error: messages.Error) -> str:
    """The whole problem document as one text: type, detail, and every subproblem."""
    parts = [f"{error.typ}: {error.detail or error.title or error.description or ''}".rstrip()]
    for sub in error.subproblems or ():
        who = f" ({sub.identifier.value})" if sub.identifier else ""
        parts.append(f"{sub.typ}{who}: {sub.detail or ''}")
    return "; ".join(parts)


def _translate(exc: BaseException) -> IssuanceError:
    if isinstance(exc, IssuanceError):
        return exc
    if isinstance(exc, messages.Error):
        return AcmeProblemError(
            describe_problem(exc),
            problem_type=str(exc.typ),
            retry_after=getattr(exc, "acmezone_retry_after", None),
        )
    if isinstance(exc, requests.RequestException):
        return AcmeUnavailableError(f"ACME server unreachable: {exc}")
    if isinstance(exc, acme_errors.ClientError):
        arg = exc.args[0] if exc.args else None
        if isinstance(arg, requests.Response):
            return AcmeUnavailableError(f"ACME server answered HTTP {arg.status_code}")
        return AcmeUnavailableError(f"unexpected ACME response: {exc}")
    if isinstance(exc, acme_errors.Error):
        return AcmeProblemError(f"ACME client error: {exc}")
    return IssuanceError(f"{type(exc).__name__}: {exc}")


async def _in_thread(function: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(function)
    except (Exception, acme_errors.Error) as exc:
        raise _translate(exc) from exc


@dataclass(frozen=True)
class Registration:
    """What the CA answered to a new-account request."""

    account_url: str
    status: str
    terms_url: str


@dataclass(frozen=True)
class Order:
    """An ACME order as last read."""

    url: str
    status: str
    identifiers: tuple[str, ...]
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str
    error: messages.Error | None
    retry_after: datetime.datetime | None


@dataclass(frozen=True)
class Authorization:
    """An ACME authorization as last read."""

    url: str
    identifier: str
    wildcard: bool
    status: str
    challenges: tuple[messages.ChallengeBody, ...]
    retry_after: datetime.datetime | None


def _retry_after(response: requests.Response) -> datetime.datetime | None:
    if "Retry-After" not in response.headers:
        return None
    naive = client.ClientV2.retry_after(response, 1)
    return naive.astimezone(datetime.UTC)


class AcmeClient:
    """The ACME operations of one account at one directory."""

    def __init__(
        self,
        directory_url: str,
        key: PrivateKey,
        account_url: str,
        metrics: IssuerMetrics,
        ca_bundle: Path | None,
    ) -> None:
        self._directory_url = directory_url
        self._key = key
        self._jwk, _ = jwk_for(key)
        self._net = _Network(key, metrics, ca_bundle, account_url)
        self._account_url = account_url
        self._directory: messages.Directory | None = None
        self._lock = asyncio.Lock()

    @property
    def key(self) -> PrivateKey:
        """The account key."""
        return self._key

    @property
    def account_url(self) -> str:
        """The account URL (dns-account-01 labels derive from it)."""
        return self._account_url

    async def directory(self) -> messages.Directory:
        """The directory, fetched once."""
        async with self._lock:
            if self._directory is None:
                url = self._directory_url

                def fetch() -> messages.Directory:
                    with _calling("directory"):
                        return client.ClientV2.get_directory(url, self._net)

                self._directory = await _in_thread(fetch)
            return self._directory

    async def _post(
        self, endpoint: str, url: str, body: JSONDeSerializable | None
    ) -> requests.Response:
        """POST `body` signed, or POST-as-GET (RFC 8555 6.3) when it is None."""
        directory = await self.directory()

        def post() -> requests.Response:
            with _calling(endpoint):
                return self._net.post(url, body, new_nonce_url=directory["newNonce"])

        return await _in_thread(post)

    async def profiles(self) -> dict[str, str]:
        """The profiles the CA offers (name -> description); empty when it offers none."""
        directory = await self.directory()
        meta = getattr(directory, "meta", None)
        profiles = getattr(meta, "profiles", None) if meta is not None else None
        return dict(profiles or {})

    async def caa_identities(self) -> list[str]:
        """The issuer domain names the CA's directory lists (`meta.caaIdentities`): what a
        dns-persist-01 record must name. Empty when it lists none."""
        directory = await self.directory()
        meta = getattr(directory, "meta", None)
        return [str(n).lower() for n in (getattr(meta, "caa_identities", None) or ())]

    async def new_order(self, dns_names: list[str], profile: str) -> Order:
        """Place an order for the names (the CSR is sent later, at finalization)."""
        directory = await self.directory()
        body = messages.NewOrder(
            identifiers=[
                messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in dns_names
            ],
            profile=profile or None,
        )
        response = await self._post("newOrder", directory["newOrder"], body)
        url = response.headers.get("Location", "")
        if not url:
            raise AcmeProblemError("the CA created an order without a Location header")
        return self._order(url, response)

    async def get_order(self, url: str) -> Order:
        """Read an order (POST-as-GET)."""
        return self._order(url, await self._post("order", url, None))

    @staticmethod
    def _order(url: str, response: requests.Response) -> Order:
        body = messages.Order.from_json(response.json())
        return Order(
            url=url,
            status=status_name(body.status),
            identifiers=tuple(str(i.value) for i in body.identifiers or ()),
            authorizations=tuple(body.authorizations or ()),
            finalize=body.finalize or "",
            certificate=body.certificate or "",
            error=body.error,
            retry_after=_retry_after(response),
        )

    async def account_orders(self, limit: int = 1000) -> list[str] | None:
        """The URLs of this account's orders (RFC 8555 section 7.1.2.1), or None when the CA
        does not list them (Let's Encrypt does not)."""
        account = (await self._post("account", self._account_url, None)).json()
        next_url = account.get("orders") if isinstance(account, dict) else None
        if not next_url:
            return None
        urls: list[str] = []
        while next_url and len(urls) < limit:
            response = await self._post("orders", str(next_url), None)
            urls += [str(u) for u in response.json().get("orders", [])]
            next_url = response.links.get("next", {}).get("url")
        return urls

    async def get_authorization(self, url: str) -> Authorization:
        """Read an authorization (POST-as-GET)."""
        response = await self._post("authorization", url, None)
        body = messages.Authorization.from_json(response.json())
        return Authorization(
            url=url,
            identifier=str(body.identifier.value),
            wildcard=bool(body.wildcard),
            status=status_name(body.status),
            challenges=tuple(body.challenges or ()),
            retry_after=_retry_after(response),
        )

    def dns01_value(self, challenge: messages.ChallengeBody) -> str:
        """The TXT value for a dns-01 or dns-account-01 challenge (base64url SHA-256 of the key
        authorization)."""
        chall = challenge.chall
        assert isinstance(chall, challenges.DNS01)
        return str(chall.validation(self._jwk))

    def http01_response(self, challenge: messages.ChallengeBody) -> tuple[str, str]:
        """(token, key authorization) for an HTTP-01 challenge."""
        chall = challenge.chall
        assert isinstance(chall, challenges.HTTP01)
        return chall.encode("token"), str(chall.validation(self._jwk))

    async def answer_challenge(self, challenge: messages.ChallengeBody) -> None:
        """Tell the CA the challenge is ready to be validated."""
        chall = challenge.chall
        if isinstance(chall, DNSPersist01):
            await self._post("challenge", challenge.uri, DNSPersist01Response())
            return
        assert isinstance(chall, challenges.KeyAuthorizationChallenge)
        await self._post("challenge", challenge.uri, chall.response(self._jwk))

    async def finalize(self, order: Order, csr_pem: bytes) -> Order:
        """Send the CSR; returns the order as the CA answered (often `processing`)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        response = await self._post(
            "finalize", order.finalize, messages.CertificateRequest(csr=csr)
        )
        return self._order(order.url, response)

    async def download(self, certificate_url: str) -> str:
        """The issued chain, PEM (leaf first)."""
        directory = await self.directory()

        def fetch() -> str:
            with _calling("certificate"):
                response = self._net.post(
                    certificate_url, None, new_nonce_url=directory["newNonce"]
                )
                return str(response.text)

        return await _in_thread(fetch)

    async def renewal_info(
        self, cert_pem: bytes
    ) -> tuple[datetime.datetime | None, datetime.datetime]:
        """ARI: (a time inside the CA's suggested window or None without ARI, next check time)."""
        directory = await self.directory()
        acme = client.ClientV2(directory, self._net)

        def ask() -> tuple[datetime.datetime | None, datetime.datetime]:
            with _calling("renewalInfo"):
                return acme.renewal_time(cert_pem)

        when, next_check = await _in_thread(ask)
        return (
            when.astimezone(datetime.UTC) if when is not None else None,
            next_check.astimezone(datetime.UTC),
        )

    async def revoke(self, cert_pem: str, reason: int) -> None:
        """Revoke a certificate this account ordered."""
        directory = await self.directory()
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        await self._post(
            "revokeCert",
            directory["revokeCert"],
            messages.Revocation(certificate=cert, reason=reason),
        )


async def register_account(
    directory_url: str,
    key: PrivateKey,
    *,
    emails: list[str],
    terms_agreed: bool,
    eab_key_id: str,
    eab_hmac_key: str,
    metrics: IssuerMetrics,
    ca_bundle: Path | None,
) -> Registration:
    """Create (or find, for a key the CA already knows) the account for `key`."""
    net = _Network(key, metrics, ca_bundle)

    def register() -> Registration:
        with _calling("directory"):
            directory = client.ClientV2.get_directory(directory_url, net)
        acme = client.ClientV2(directory, net)
        eab = None
        if eab_key_id:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=jwk_for(key)[0].public_key(),
                kid=eab_key_id,
                hmac_key=eab_hmac_key,
                directory=directory,
            )
        elif acme.external_account_required():
            raise AcmeProblemError(
                "the ACME server requires an External Account Binding",
                problem_type="urn:ietf:params:acme:error:externalAccountRequired",
            )
        new = messages.NewRegistration.from_data(
            email=",".join(emails) if emails else None,
            terms_of_service_agreed=terms_agreed,
            external_account_binding=eab,
        )
        with _calling("newAccount"):
            try:
                regr = acme.new_account(new)
            except acme_errors.ConflictError as conflict:
                # The CA knows this key already: it answered with the account's URL.
                return Registration(str(conflict.location), AcmeStatus.VALID, "")
        return Registration(
            account_url=str(regr.uri),
            status=str(regr.body.status or AcmeStatus.VALID),
            terms_url=str(regr.terms_of_service or ""),
        )

    return await _in_thread(register)


async def terms_of_service(
    directory_url: str, metrics: IssuerMetrics, ca_bundle: Path | None
) -> str:
    """The terms-of-service URL a directory publishes ("" when none)."""
    net = _Network(None, metrics, ca_bundle)

    def fetch() -> str:
        with _calling("directory"):
            directory = client.ClientV2.get_directory(directory_url, net)
        meta = getattr(directory, "meta", None)
        return str(getattr(meta, "terms_of_service", "") or "")

    return await _in_thread(fetch)
