"""The reconciler: drives every certificate to ISSUED and keeps it there.

A loop picks certificates whose `next_attempt_time` has come, takes each one's lease, and runs one
attempt: check delegations, place an order, present and answer challenges, finalize with a fresh
key, download, plan the renewal. The state (stage, order URL, the sealed pending key) is written
before each ACME step, so a restarted issuer resumes the order in flight rather than placing a
duplicate. A failed attempt is recorded with the CA's error in full and retried with exponential
backoff. Every write is conditional on holding the lease, so a replica that lost it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from acmezone_common.sql import utcnow
from acmezone_issuer.accounts import AccountManager
from acmezone_issuer.acme_client import (
    AcmeClient,
    Authorization,
    Order,
    describe_problem,
    status_name,
)
from acmezone_issuer.challenges import (
    AUTO_PREFERENCE,
    DNS_METHODS,
    ChallengeType,
)
from acmezone_issuer.errors import (
    AcmeProblemError,
    AcmeUnavailableError,
    IssuanceError,
    OrderInvalidError,
    OrderTimeoutError,
    RegistryError,
    ValidationFailedError,
)
from acmezone_issuer.events import CertificateEvents
from acmezone_issuer.fleet import summarise
from acmezone_issuer.keys import KeySealer, build_csr, generate_key
from acmezone_issuer.metrics import IssuerMetrics
from acmezone_issuer.names import base_domain
from acmezone_issuer.renewal import leaf_info, lifetime_renewal_time, retry_delay
from acmezone_issuer.solvers.dns01 import Dns01Solver
from acmezone_issuer.solvers.http01 import Http01Solver
from acmezone_issuer.storage.repository import CertificateUpdate, Repository
from acmezone_issuer.storage.tables import CertificateRow, DelegationRow

logger = logging.getLogger(__name__)

# States and stages as stored (the proto enums without their prefixes, lower case).
PENDING = "pending"
WAITING = "waiting_for_delegation"
ISSUING = "issuing"
ISSUED = "issued"
RENEWING = "renewing"
FAILED = "failed"
REVOKED = "revoked"

DNS01 = ChallengeType.DNS01
HTTP01 = ChallengeType.HTTP01

_CONCURRENCY = 8
# Polling without Retry-After: soon at first (Pebble and step-ca validate in milliseconds), then
# doubling up to a pace that does not burden a busy CA.
_FIRST_POLL_SECONDS = 0.25
_LONGEST_DEFAULT_POLL_SECONDS = 2.0
_MAX_POLL_SECONDS = 10.0
# Failures that leave the order usable: the next attempt resumes it instead of ordering anew.
_TRANSIENT = (AcmeUnavailableError, RegistryError)
# When ARI cannot be fetched, ask again after this long; never re-ask more often than the minimum.
_ARI_RETRY = timedelta(hours=1)
_ARI_MIN_RECHECK = timedelta(seconds=1)
_FRESH_MIN_LIFE = timedelta(hours=1)
# How many of an account's newest orders to look through for one an interruption left behind.
_ORDERS_TO_SCAN = 20


def default_replica_id() -> str:
    """host:pid:random, unique per process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def delegation_methods(challenge_type: str) -> tuple[ChallengeType, ...]:
    """The delegated DNS methods a certificate's setting may use (none for http-01)."""
    if challenge_type == ChallengeType.AUTO:
        return DNS_METHODS
    if challenge_type in (*DNS_METHODS, ChallengeType.DNS_PERSIST01):
        return (ChallengeType(challenge_type),)
    return ()


def missing_delegations(row: CertificateRow) -> list[str]:
    """The CNAMEs still needed before ordering: every checked one for dns-01 and
    dns-account-01; for `auto`, one per domain that has a wildcard name (the others can fall
    back to HTTP-01) and no ready CNAME of either kind."""
    delegations = row.delegations or []
    if row.challenge_type != ChallengeType.AUTO:
        return [d["cname_name"] for d in delegations if not d["ready"]]
    wildcard_domains = {base_domain(n) for n in row.dns_names if n.startswith("*.")}
    missing = []
    for domain in sorted(wildcard_domains):
        checks = [d for d in delegations if d["domain"] == domain]
        if checks and not any(d["ready"] for d in checks):
            missing += [d["cname_name"] for d in checks]
    return missing


def compute_conditions(row: CertificateRow, now: datetime) -> list[dict[str, Any]]:
    """Ready, Issuing and DelegationReady from the row's fields, keeping transition times of
    conditions whose status did not change."""
    previous = {c["type"]: c for c in row.conditions or []}
    has_valid = bool(row.chain_pem) and row.not_after is not None and row.not_after > now
    failure = row.last_failure or {}
    if row.state == REVOKED:
        ready = ("False", "Revoked", "the certificate was revoked on request")
    elif has_valid:
        ready = ("True", "Issued", f"valid until {row.not_after:%Y-%m-%d %H:%M:%SZ}")
    elif row.state == FAILED:
        ready = ("False", "Failed", failure.get("message", "the last attempt failed"))
    elif row.state == WAITING:
        ready = ("False", "WaitingForCNAME", "waiting for _acme-challenge CNAMEs to be added")
    else:
        ready = ("False", "NotIssued", "no certificate has been issued yet")
    if row.stage:
        issuing = ("True", "InProgress", f"stage {row.stage}")
    elif row.state == FAILED:
        issuing = ("False", "Failed", failure.get("message", ""))
    elif row.state == WAITING:
        issuing = ("False", "WaitingForCNAME", "no order is placed until every CNAME resolves")
    else:
        issuing = ("False", "Idle", "no issuance in progress")
    conditions = [("Ready", *ready), ("Issuing", *issuing)]
    if delegation_methods(row.challenge_type) and row.delegations:
        missing = missing_delegations(row)
        if missing:
            delegation = ("False", "WaitingForCNAME", "missing: " + ", ".join(missing))
        else:
            delegation = ("True", "CNAMEsInPlace", "every CNAME needed resolves")
        conditions.append(("DelegationReady", *delegation))
    result = []
    for ctype, status, reason, message in conditions:
        before = previous.get(ctype)
        since = (
            before["last_transition_time"]
            if before and before["status"] == status
            else now.isoformat()
        )
        result.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "last_transition_time": since,
            }
        )
    return result


def _earliest_end(checks: list[dict[str, Any]]) -> datetime | None:
    ends = [datetime.fromisoformat(c["persist_until"]) for c in checks if c.get("persist_until")]
    return min(ends) if ends else None


class LeaseLostError(Exception):
    """Another replica took the certificate over, or it was deleted; stop working on it."""


@dataclass
class _Attempt:
    """What one attempt published, to withdraw at the end."""

    txt: dict[str, tuple[DelegationRow, set[str]]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)


class Reconciler:
    """Finds due certificates and works each one, at most `_CONCURRENCY` at a time."""

    def __init__(
        self,
        repository: Repository,
        sealer: KeySealer,
        accounts: AccountManager,
        dns01: Dns01Solver,
        http01: Http01Solver,
        events: CertificateEvents,
        metrics: IssuerMetrics,
        *,
        replica_id: str,
        interval: float,
        delegation_recheck: float,
        validation_timeout: float,
        retry_base: float,
        retry_max: float,
        jitter_fraction: float,
        lease_seconds: float,
        rng: random.Random | None = None,
    ) -> None:
        self._repository = repository
        self._sealer = sealer
        self._accounts = accounts
        self._dns01 = dns01
        self._http01 = http01
        self._events = events
        self._metrics = metrics
        self._owner = replica_id
        self._interval = interval
        self._recheck = timedelta(seconds=delegation_recheck)
        self._validation_timeout = validation_timeout
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._jitter = jitter_fraction
        self._lease = timedelta(seconds=lease_seconds)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._wake = asyncio.Event()
        self._working: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def replica_id(self) -> str:
        """The lease owner name of this replica."""
        return self._owner

    def start(self) -> None:
        """Start the background loop."""
        self._loop_task = asyncio.create_task(self._loop(), name="reconciler")

    def wake(self) -> None:
        """Look for due certificates now rather than at the next interval."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the loop and every attempt in progress; their state is already persisted."""
        tasks = [t for t in (self._loop_task, *self._working.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._working.clear()
        self._loop_task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconcile pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()

    async def _tick(self) -> None:
        await self._refresh_gauges()
        free = _CONCURRENCY - len(self._working)
        if free <= 0:
            return
        for certificate_id in await self._repository.due_certificates(utcnow(), free * 2):
            if certificate_id in self._working or len(self._working) >= _CONCURRENCY:
                continue
            task = asyncio.create_task(self._work(certificate_id), name=f"cert:{certificate_id}")
            self._working[certificate_id] = task
            task.add_done_callback(functools.partial(self._done, certificate_id))

    def _done(self, certificate_id: str, _task: asyncio.Task[None]) -> None:
        self._working.pop(certificate_id, None)
        self._wake.set()

    async def _refresh_gauges(self) -> None:
        """From the shared database, so every replica exports the same figures."""
        self._metrics.set_state_counts(await self._repository.count_certificates_by_state())
        self._metrics.set_schedules(
            {
                f"certificates/{cid}": (not_after, renewal)
                for cid, not_after, renewal in await self._repository.all_schedules()
            }
        )
        self._metrics.set_delivery(
            {
                f"certificates/{cid}": (f.current, f.stale, f.earliest_stale_not_after)
                for cid, f in summarise(await self._repository.delivery_summary()).items()
            }
        )

    # -- one certificate -----------------------------------------------------------------------

    async def _work(self, certificate_id: str) -> None:
        row = await self._repository.acquire_lease(certificate_id, self._owner, self._lease)
        if row is None:
            return
        keeper = asyncio.create_task(self._keep_lease(certificate_id))
        job = _CertificateJob(self, row)
        try:
            await job.run()
        except LeaseLostError:
            logger.warning("lease lost", extra={"certificate": certificate_id})
        except Exception as exc:
            logger.exception("certificate attempt crashed", extra={"certificate": certificate_id})
            # Record it like any failure, so a persistent fault backs off instead of spinning.
            with contextlib.suppress(Exception):
                await job.fail(IssuanceError(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await asyncio.shield(self._repository.release_lease(certificate_id, self._owner))

    async def _keep_lease(self, certificate_id: str) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            if not await self._repository.renew_lease(certificate_id, self._owner, self._lease):
                return


class _CertificateJob:
    """One attempt on one certificate, holding its lease."""

    def __init__(self, reconciler: Reconciler, row: CertificateRow) -> None:
        self.r = reconciler
        self.row = row
        self.attempt = _Attempt()
        self.poll_delay = _FIRST_POLL_SECONDS

    async def save(self, **changes: Any) -> CertificateRow:
        """Persist changes (conditions recomputed) while holding the lease."""
        for key, value in changes.items():
            setattr(self.row, key, value)
        changes["conditions"] = compute_conditions(self.row, utcnow())
        updated = await self.r._repository.update_certificate(
            self.row.id, CertificateUpdate(**changes), lease_owner=self.r._owner
        )
        if updated is None:
            raise LeaseLostError(self.row.id)
        self.row = updated
        self.r._events.changed()
        return updated

    def has_valid_certificate(self) -> bool:
        return bool(self.row.chain_pem) and (
            self.row.not_after is not None and self.row.not_after > utcnow()
        )

    async def run(self) -> None:
        row = self.row
        if row.state == REVOKED and not row.renew_requested:
            await self.save(next_attempt_time=None)
            return
        account = await self.r._repository.get_account(row.account_id)
        try:
            try:
                await self.attempt_with(self.r._accounts.client_for(account))
            except AcmeProblemError as exc:
                if not exc.problem_type.endswith(":accountDoesNotExist"):
                    raise
                # The CA forgot the account (a restarted Pebble does): register the same key
                # again and make the attempt once more; an order of the lost account is gone.
                account = await self.r._accounts.register_again(account)
                await self.save(order_url="", stage="")
                await self.attempt_with(self.r._accounts.client_for(account))
        except IssuanceError as exc:
            await self.fail(exc)
        finally:
            await self.withdraw()

    async def attempt_with(self, client: AcmeClient) -> None:
        """Resume the order in flight, or re-check ARI, or check delegations and order."""
        if self.row.order_url:
            await self.drive(client, await client.get_order(self.row.order_url))
            return
        if await self.recheck_renewal_info(client):
            return
        if delegation_methods(self.row.challenge_type) and not await self.delegations_ready(client):
            return
        await self.place_order(client)

    async def delegations_ready(self, client: AcmeClient) -> bool:
        """Check every CNAME (for dns-persist-01: every record); without those needed wait,
        placing no order."""
        account_url = client.account_url
        await self.save(
            state=RENEWING if self.has_valid_certificate() else ISSUING,
            stage="checking_delegation",
        )
        domains = sorted({base_domain(name) for name in self.row.dns_names})
        checks = []
        issuer_domains: list[str] = []
        if self.row.challenge_type == ChallengeType.DNS_PERSIST01:
            issuer_domains = await client.caa_identities()
            if not issuer_domains:
                raise AcmeProblemError(
                    "the CA's directory lists no caaIdentities, so the dns-persist-01 record "
                    "cannot name it; use another challenge type"
                )
        for domain in domains:
            for method in delegation_methods(self.row.challenge_type):
                if method == ChallengeType.DNS_PERSIST01:
                    wildcard = f"*.{domain}" in self.row.dns_names
                    check = await self.r._dns01.check_persist(
                        domain, account_url, issuer_domains, wildcard
                    )
                else:
                    check = await self.r._dns01.check(domain, method, account_url)
                checks.append(
                    {
                        "domain": check.domain,
                        "challenge_type": str(check.method),
                        "cname_name": check.cname_name,
                        "cname_target": check.cname_target,
                        "ready": check.ready,
                        "detail": check.detail,
                        "check_time": utcnow().isoformat(),
                        "txt_value": check.txt_value,
                        "persist_until": (
                            check.persist_until.isoformat() if check.persist_until else None
                        ),
                    }
                )
        self.r._metrics.set_persist_until(f"certificates/{self.row.id}", _earliest_end(checks))
        self.row.delegations = checks
        missing = missing_delegations(self.row)
        if not missing:
            await self.save(delegations=checks)
            return True
        await self.save(
            state=WAITING,
            stage="",
            delegations=checks,
            next_attempt_time=utcnow() + self.r._recheck,
        )
        logger.info(
            "waiting for CNAMEs",
            extra={
                "certificate": self.row.id,
                "missing": missing,
            },
        )
        return False

    async def place_order(self, client: AcmeClient) -> None:
        interrupted = self.row.stage == "ordering"
        key = generate_key(self.row.key_type)
        context = f"certificate/{self.row.id}/pending"
        await self.save(
            state=RENEWING if self.has_valid_certificate() else ISSUING,
            stage="ordering",
            sealed_pending_key=self.r._sealer.seal_key(key, context),
            attempt_start_time=utcnow(),
        )
        if interrupted:
            # The last run stopped between asking for an order and recording it: the CA may
            # have created one. Carry that order on rather than placing a second.
            adopted = await self.unrecorded_order(client)
            if adopted is not None:
                await self.r._repository.record_order(self.row.id, adopted.url)
                await self.save(order_url=adopted.url, stage="presenting")
                logger.info(
                    "order adopted after an interruption",
                    extra={"certificate": self.row.id, "order": adopted.url},
                )
                await self.drive(client, adopted)
                return
        self.r._metrics.attempts.inc()
        order = await client.new_order(self.row.dns_names, self.row.profile)
        await self.r._repository.record_order(self.row.id, order.url)
        await self.save(order_url=order.url, stage="presenting")
        logger.info("order placed", extra={"certificate": self.row.id, "order": order.url})
        await self.drive(client, order)

    async def unrecorded_order(self, client: AcmeClient) -> Order | None:
        """A live order of this account for exactly these names that no attempt recorded."""
        urls = await client.account_orders()
        if urls is None:
            logger.warning(
                "the CA does not list orders; an order placed just before the interruption "
                "cannot be found, so another is placed",
                extra={"certificate": self.row.id},
            )
            return None
        known = {o.order_url for o in await self.r._repository.orders_of(self.row.id)}
        wanted = sorted(self.row.dns_names)
        for url in reversed([u for u in urls if u not in known][-_ORDERS_TO_SCAN:]):
            order = await client.get_order(url)
            if order.status != "invalid" and sorted(order.identifiers) == wanted:
                return order
        return None

    async def drive(self, client: AcmeClient, order: Order) -> None:
        """Move an order on from whatever status it has until it is valid (or fails)."""
        deadline = time.monotonic() + self.r._validation_timeout
        while True:
            if order.status == "pending":
                await self.solve(client, order, deadline)
            elif order.status == "ready":
                await self.save(stage="finalizing")
                assert self.row.sealed_pending_key is not None
                key = self.r._sealer.open_key(
                    self.row.sealed_pending_key, f"certificate/{self.row.id}/pending"
                )
                try:
                    order = await client.finalize(order, build_csr(key, self.row.dns_names))
                    continue
                except AcmeProblemError as exc:
                    if not exc.problem_type.endswith("orderNotReady"):
                        raise
            elif order.status == "processing":
                await self.sleep_until(order.retry_after, deadline)
            elif order.status == "valid":
                await self.complete(client, order)
                return
            elif order.status == "invalid":
                detail = describe_problem(order.error) if order.error else "no detail given"
                raise OrderInvalidError(
                    f"the CA marked the order invalid: {detail}",
                    problem_type=str(order.error.typ) if order.error else "",
                )
            else:
                raise AcmeProblemError(f"order has unknown status {order.status!r}")
            if time.monotonic() > deadline:
                raise OrderTimeoutError(
                    f"order still {order.status} after {self.r._validation_timeout:.0f}s"
                )
            order = await client.get_order(order.url)

    async def sleep_until(self, when: datetime | None, deadline: float) -> None:
        """Honour Retry-After (bounded); without it, back off from a quarter second to two."""
        seconds = self.poll_delay
        self.poll_delay = min(self.poll_delay * 2, _LONGEST_DEFAULT_POLL_SECONDS)
        if when is not None:
            seconds = min(max((when - utcnow()).total_seconds(), 0.0), _MAX_POLL_SECONDS)
        seconds = min(seconds, max(deadline - time.monotonic(), 0.0))
        await asyncio.sleep(seconds)

    async def solve(self, client: AcmeClient, order: Order, deadline: float) -> None:
        """Present every pending authorization's challenge, wait for DNS, answer, and poll."""
        authorizations = [await client.get_authorization(url) for url in order.authorizations]
        pending = [a for a in authorizations if a.status == "pending"]
        to_answer = []
        revision = 0  # the feed revision that carries every value written
        await self.save(stage="presenting")
        for authorization in pending:
            challenge = self.pick_challenge(authorization)
            method = ChallengeType(str(challenge.chall.typ))
            if method == ChallengeType.DNS_PERSIST01:
                # Nothing to write: the record is in place (checked before ordering); the CA
                # must accept the issuer domain name it carries.
                self.check_persist_issuer(challenge, authorization)
            elif method in DNS_METHODS:
                domain = base_domain(authorization.identifier)
                delegation = await self.r._dns01.delegation(domain, method, client.account_url)
                value = client.dns01_value(challenge)
                revision = max(revision, await self.r._dns01.present(delegation, value))
                entry = self.attempt.txt.setdefault(delegation.fulldomain, (delegation, set()))
                entry[1].add(value)
            else:
                token, key_authorization = client.http01_response(challenge)
                await self.r._http01.present(token, key_authorization, self.row.id)
                self.attempt.tokens.add(token)
            if status_name(challenge.status) == "pending":
                to_answer.append(challenge)
        if self.attempt.txt:
            await self.save(stage="propagating")
            await self.r._dns01.wait_replicas(revision)
            await self.r._dns01.wait_propagated(
                {fulldomain: values for fulldomain, (_, values) in self.attempt.txt.items()}
            )
        await self.save(stage="validating")
        for challenge in to_answer:
            await client.answer_challenge(challenge)
        for authorization in pending:
            await self.poll_authorization(client, authorization, deadline)

    def check_persist_issuer(self, challenge: Any, authorization: Authorization) -> None:
        named = {
            d["txt_value"].split(";")[0]
            for d in self.row.delegations or []
            if d.get("challenge_type") == ChallengeType.DNS_PERSIST01
            and d["domain"] == authorization.identifier
        }
        accepted = list(getattr(challenge.chall, "issuer_domain_names", ()))
        if accepted and not named & set(accepted):
            raise AcmeProblemError(
                f"the CA accepts dns-persist-01 records for {authorization.identifier} only "
                f"from {', '.join(accepted)}, not {', '.join(sorted(named)) or 'none'}"
            )

    def usable_methods(self, authorization: Authorization) -> list[ChallengeType]:
        """The methods this certificate may use for the authorization, best first."""
        setting = self.row.challenge_type
        if setting != ChallengeType.AUTO:
            return [ChallengeType(setting)]
        ready = {
            d["challenge_type"]
            for d in self.row.delegations or []
            if d["ready"] and d["domain"] == base_domain(authorization.identifier)
        }
        return [
            method
            for method in AUTO_PREFERENCE
            if method in ready or (method == ChallengeType.HTTP01 and not authorization.wildcard)
        ]

    def pick_challenge(self, authorization: Authorization) -> Any:
        """The challenge to answer: the best allowed type the CA offers for this name."""
        allowed = self.usable_methods(authorization)
        by_type = {str(c.chall.typ): c for c in authorization.challenges}
        for method in allowed:
            if str(method) in by_type:
                return by_type[str(method)]
        name = ("*." if authorization.wildcard else "") + authorization.identifier
        raise AcmeProblemError(
            f"the CA offers none of the allowed challenge types for {name} "
            f"(allowed: {', '.join(allowed) or 'none'}; offered: "
            f"{', '.join(sorted(by_type)) or 'none'})"
        )

    async def poll_authorization(
        self, client: AcmeClient, authorization: Authorization, deadline: float
    ) -> None:
        current = authorization
        while True:
            current = await client.get_authorization(current.url)
            if current.status == "valid":
                return
            if current.status != "pending":
                problems = [
                    describe_problem(c.error) for c in current.challenges if c.error is not None
                ]
                types = [str(c.error.typ) for c in current.challenges if c.error is not None]
                detail = "; ".join(problems) or f"authorization is {current.status}"
                raise ValidationFailedError(
                    f"validation of {current.identifier} failed: {detail}",
                    problem_type=types[0] if types else "",
                )
            if time.monotonic() > deadline:
                raise OrderTimeoutError(
                    f"the CA did not validate {current.identifier} within "
                    f"{self.r._validation_timeout:.0f}s"
                )
            await self.sleep_until(current.retry_after, deadline)

    async def complete(self, client: AcmeClient, order: Order) -> None:
        await self.save(stage="downloading")
        chain = await client.download(order.certificate)
        leaf = leaf_info(chain)
        renewal_time, source, next_time = await self.plan_renewal(
            client, chain, leaf.not_before, leaf.not_after, fresh=True
        )
        now = utcnow()
        started = self.row.attempt_start_time
        await self.save(
            state=ISSUED,
            stage="",
            order_url="",
            chain_pem=chain,
            sealed_key=self.reseal_pending_key(),
            sealed_pending_key=None,
            serial_number=leaf.serial_number,
            not_before=leaf.not_before,
            not_after=leaf.not_after,
            renewal_time=renewal_time,
            renewal_source=source,
            issue_time=now,
            revoke_time=None,
            failed_attempts=0,
            last_failure=None,
            renew_requested=False,
            next_attempt_time=next_time,
            attempt_start_time=None,
        )
        if started is not None:
            self.r._metrics.duration.observe((now - started).total_seconds())
        name = f"certificates/{self.row.id}"
        self.r._metrics.expiry.labels(name).set(leaf.not_after.timestamp())
        self.r._metrics.renewal.labels(name).set(renewal_time.timestamp())
        logger.info(
            "certificate issued",
            extra={
                "certificate": self.row.id,
                "serial": leaf.serial_number,
                "renewal_time": renewal_time.isoformat(),
            },
        )

    def reseal_pending_key(self) -> bytes:
        assert self.row.sealed_pending_key is not None
        key = self.r._sealer.open_key(
            self.row.sealed_pending_key, f"certificate/{self.row.id}/pending"
        )
        return self.r._sealer.seal_key(key, f"certificate/{self.row.id}")

    async def plan_renewal(
        self,
        client: AcmeClient,
        chain: str,
        not_before: datetime,
        not_after: datetime,
        *,
        fresh: bool,
    ) -> tuple[datetime, str, datetime]:
        """(renewal time, source, when to work on the certificate next).

        ARI's suggestion when the CA offers it, re-asked when the CA's Retry-After says so (the
        CA may move the window, e.g. before a mass revocation); otherwise two thirds of the
        lifetime with jitter.
        """
        try:
            suggested, next_check = await client.renewal_info(chain.encode())
        except IssuanceError as exc:
            logger.warning("ARI unavailable", extra={"certificate": self.row.id, "error": str(exc)})
            suggested, next_check = None, utcnow() + _ARI_RETRY
        if suggested is not None:
            if fresh:
                # A window already past for a certificate just issued would renew it in a loop.
                floor = utcnow() + min(_FRESH_MIN_LIFE, (not_after - not_before) / 3)
                suggested = max(suggested, floor)
            return suggested, "ari", min(suggested, max(next_check, utcnow() + _ARI_MIN_RECHECK))
        when = lifetime_renewal_time(not_before, not_after, self.r._jitter, self.r._rng)
        return when, "lifetime", when

    async def recheck_renewal_info(self, client: AcmeClient) -> bool:
        """For an issued certificate that is not due yet: ask ARI again and reschedule.

        True when that is all there was to do; False when the certificate is due for renewal.
        """
        row = self.row
        now = utcnow()
        if (
            row.state != ISSUED
            or row.renew_requested
            or row.renewal_time is None
            or row.renewal_time <= now
            or row.not_before is None
            or row.not_after is None
        ):
            return False
        renewal_time, source, next_time = await self.plan_renewal(
            client, row.chain_pem, row.not_before, row.not_after, fresh=False
        )
        if source == "lifetime" and row.renewal_source == "lifetime":
            renewal_time = next_time = row.renewal_time
        if renewal_time <= now:
            logger.info("ARI window reached", extra={"certificate": row.id})
            return False
        await self.save(
            renewal_time=renewal_time, renewal_source=source, next_attempt_time=next_time
        )
        self.r._metrics.renewal.labels(f"certificates/{row.id}").set(renewal_time.timestamp())
        return True

    async def fail(self, exc: IssuanceError) -> None:
        failed = self.row.failed_attempts + 1
        delay = retry_delay(failed, self.r._retry_base, self.r._retry_max, self.r._rng)
        keep_order = isinstance(exc, _TRANSIENT)
        stage = self.row.stage
        self.r._metrics.failures.labels(exc.reason).inc()
        logger.warning(
            "issuance attempt failed",
            extra={"certificate": self.row.id, "reason": exc.reason, "error": exc.message},
        )
        next_attempt = utcnow() + delay
        if exc.retry_after is not None:
            # The CA named a time (rate limits do): never come back before it.
            next_attempt = max(next_attempt, exc.retry_after)
        if self.has_valid_certificate() and self.row.renewal_time is not None:
            # Keep trying before expiry, but never later than the planned retry.
            next_attempt = min(next_attempt, max(self.row.not_after or next_attempt, utcnow()))
        await self.save(
            state=FAILED,
            stage="",
            failed_attempts=failed,
            last_failure={
                "time": utcnow().isoformat(),
                "stage": stage,
                "reason": exc.reason,
                "message": exc.message,
                "acme_problem_type": exc.problem_type,
            },
            next_attempt_time=next_attempt,
            order_url=self.row.order_url if keep_order else "",
            sealed_pending_key=self.row.sealed_pending_key if keep_order else None,
        )

    async def withdraw(self) -> None:
        """Take down whatever this attempt published (best effort)."""
        for delegation, values in self.attempt.txt.values():
            for value in values:
                await self.r._dns01.cleanup(delegation, value)
        for token in self.attempt.tokens:
            await self.r._http01.cleanup(token)
        self.attempt = _Attempt()
