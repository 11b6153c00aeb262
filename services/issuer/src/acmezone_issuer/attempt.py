"""One attempt on one certificate: the ACME state machine the reconciler runs under a lease.

Check delegations, place an order (or adopt one an interruption left unrecorded), present and
answer challenges, finalize with a fresh key, download, plan the renewal. The state (stage,
order URL, the sealed pending key) is written before each ACME step, so a restarted issuer
resumes the order in flight rather than placing a duplicate. A failed attempt is recorded with
the CA's error in full and retried with exponential backoff. Every write is conditional on
holding the lease, so an attempt whose replica lost it stops (`LeaseLostError`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from acme import messages

from acmezone_common.sql import utcnow
from acmezone_issuer.accounts import AccountManager
from acmezone_issuer.acme_client import (
    AcmeClient,
    AcmeStatus,
    Authorization,
    Order,
    describe_problem,
    status_name,
)
from acmezone_issuer.challenges import AUTO_PREFERENCE, DNS_METHODS, ChallengeType
from acmezone_issuer.conditions import compute_conditions, delegation_methods, missing_delegations
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
from acmezone_issuer.keys import KeySealer, build_csr, generate_key
from acmezone_issuer.metrics import IssuerMetrics
from acmezone_issuer.names import base_domain
from acmezone_issuer.renewal import RenewalPlan, leaf_info, plan_renewal, retry_delay
from acmezone_issuer.solvers.dns01 import Dns01Solver
from acmezone_issuer.solvers.http01 import Http01Solver
from acmezone_issuer.states import CertificateState, RenewalSource, Stage
from acmezone_issuer.storage.repository import CertificateUpdate, Repository
from acmezone_issuer.storage.tables import CertificateRow, DelegationRow, DelegationStatus

logger = logging.getLogger(__name__)

# Polling without Retry-After: soon at first (Pebble and step-ca validate in milliseconds), then
# doubling up to a pace that does not burden a busy CA.
_FIRST_POLL_SECONDS = 0.25
_LONGEST_DEFAULT_POLL_SECONDS = 2.0
_MAX_POLL_SECONDS = 10.0
# Failures that leave the order usable: the next attempt resumes it instead of ordering anew.
_TRANSIENT = (AcmeUnavailableError, RegistryError)
# How many of an account's newest orders to look through for one an interruption left behind.
_ORDERS_TO_SCAN = 20


class LeaseLostError(Exception):
    """Another replica took the certificate over, or it was deleted; stop working on it."""


@dataclass(frozen=True)
class AttemptServices:
    """The collaborators every attempt uses, built once by the reconciler."""

    repository: Repository
    sealer: KeySealer
    accounts: AccountManager
    dns01: Dns01Solver
    http01: Http01Solver
    events: CertificateEvents
    metrics: IssuerMetrics
    owner: str  # this replica's lease owner name


@dataclass(frozen=True)
class AttemptPolicy:
    """The figures an attempt follows (from the settings)."""

    delegation_recheck: timedelta
    validation_timeout: float
    retry_base: float
    retry_max: float
    jitter_fraction: float
    rng: random.Random


@dataclass
class _Published:
    """What one attempt published, to withdraw at the end."""

    txt: dict[str, tuple[DelegationRow, set[str]]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)


def _earliest_end(checks: list[DelegationStatus]) -> datetime | None:
    ends = [
        datetime.fromisoformat(until)
        for c in checks
        if isinstance(until := c.get("persist_until"), str) and until
    ]
    return min(ends) if ends else None


class CertificateAttempt:
    """One attempt on one certificate, holding its lease: the ACME state machine.

    Everything it works with comes in through the constructor (`AttemptServices`, the
    `AttemptPolicy` figures, the row it holds the lease on), so it can be read and tested
    without the scheduler that starts it.
    """

    def __init__(
        self, row: CertificateRow, services: AttemptServices, policy: AttemptPolicy
    ) -> None:
        self.row = row
        self._repository = services.repository
        self._sealer = services.sealer
        self._accounts = services.accounts
        self._dns01 = services.dns01
        self._http01 = services.http01
        self._events = services.events
        self._metrics = services.metrics
        self._owner = services.owner
        self._policy = policy
        self.attempt = _Published()
        self.poll_delay = _FIRST_POLL_SECONDS

    async def save(self, changes: CertificateUpdate) -> CertificateRow:
        """Persist changes (conditions recomputed) while holding the lease."""
        changes.apply_to(self.row)
        conditions = [c.as_json() for c in compute_conditions(self.row, utcnow())]
        updated = await self._repository.update_certificate(
            self.row.id, replace(changes, conditions=conditions), lease_owner=self._owner
        )
        if updated is None:
            raise LeaseLostError(self.row.id)
        self.row = updated
        self._events.changed()
        return updated

    def has_valid_certificate(self) -> bool:
        return bool(self.row.chain_pem) and (
            self.row.not_after is not None and self.row.not_after > utcnow()
        )

    async def run(self) -> None:
        row = self.row
        if row.state == CertificateState.REVOKED and not row.renew_requested:
            await self.save(CertificateUpdate(next_attempt_time=None))
            return
        account = await self._repository.get_account(row.account_id)
        try:
            try:
                await self.attempt_with(self._accounts.client_for(account))
            except AcmeProblemError as exc:
                if not exc.problem_type.endswith(":accountDoesNotExist"):
                    raise
                # The CA forgot the account (a restarted Pebble does): register the same key
                # again and make the attempt once more; an order of the lost account is gone.
                account = await self._accounts.register_again(account)
                await self.save(CertificateUpdate(order_url="", stage=Stage.NONE))
                await self.attempt_with(self._accounts.client_for(account))
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
            CertificateUpdate(
                state=CertificateState.RENEWING
                if self.has_valid_certificate()
                else CertificateState.ISSUING,
                stage=Stage.CHECKING_DELEGATION,
            )
        )
        domains = sorted({base_domain(name) for name in self.row.dns_names})
        checks: list[DelegationStatus] = []
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
                    check = await self._dns01.check_persist(
                        domain, account_url, issuer_domains, wildcard
                    )
                else:
                    check = await self._dns01.check(domain, method, account_url)
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
        self._metrics.set_persist_until(f"certificates/{self.row.id}", _earliest_end(checks))
        self.row.delegations = checks
        missing = missing_delegations(self.row)
        if not missing:
            await self.save(CertificateUpdate(delegations=checks))
            return True
        await self.save(
            CertificateUpdate(
                state=CertificateState.WAITING_FOR_DELEGATION,
                stage=Stage.NONE,
                delegations=checks,
                next_attempt_time=utcnow() + self._policy.delegation_recheck,
            )
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
        interrupted = self.row.stage == Stage.ORDERING
        key = generate_key(self.row.key_type)
        context = f"certificate/{self.row.id}/pending"
        await self.save(
            CertificateUpdate(
                state=CertificateState.RENEWING
                if self.has_valid_certificate()
                else CertificateState.ISSUING,
                stage=Stage.ORDERING,
                sealed_pending_key=self._sealer.seal_key(key, context),
                attempt_start_time=utcnow(),
            )
        )
        if interrupted:
            # The last run stopped between asking for an order and recording it: the CA may
            # have created one. Carry that order on rather than placing a second.
            adopted = await self.unrecorded_order(client)
            if adopted is not None:
                await self._repository.record_order(self.row.id, adopted.url)
                await self.save(CertificateUpdate(order_url=adopted.url, stage=Stage.PRESENTING))
                logger.info(
                    "order adopted after an interruption",
                    extra={"certificate": self.row.id, "order": adopted.url},
                )
                await self.drive(client, adopted)
                return
        self._metrics.attempts.inc()
        order = await client.new_order(self.row.dns_names, self.row.profile)
        await self._repository.record_order(self.row.id, order.url)
        await self.save(CertificateUpdate(order_url=order.url, stage=Stage.PRESENTING))
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
        known = {o.order_url for o in await self._repository.orders_of(self.row.id)}
        wanted = sorted(self.row.dns_names)
        for url in reversed([u for u in urls if u not in known][-_ORDERS_TO_SCAN:]):
            order = await client.get_order(url)
            if order.status != AcmeStatus.INVALID and sorted(order.identifiers) == wanted:
                return order
        return None

    async def drive(self, client: AcmeClient, order: Order) -> None:
        """Move an order on from whatever status it has until it is valid (or fails)."""
        deadline = time.monotonic() + self._policy.validation_timeout
        while True:
            if order.status == AcmeStatus.PENDING:
                await self.solve(client, order, deadline)
            elif order.status == AcmeStatus.READY:
                await self.save(CertificateUpdate(stage=Stage.FINALIZING))
                assert self.row.sealed_pending_key is not None
                key = self._sealer.open_key(
                    self.row.sealed_pending_key, f"certificate/{self.row.id}/pending"
                )
                try:
                    order = await client.finalize(order, build_csr(key, self.row.dns_names))
                    continue
                except AcmeProblemError as exc:
                    if not exc.problem_type.endswith("orderNotReady"):
                        raise
            elif order.status == AcmeStatus.PROCESSING:
                await self.sleep_until(order.retry_after, deadline)
            elif order.status == AcmeStatus.VALID:
                await self.complete(client, order)
                return
            elif order.status == AcmeStatus.INVALID:
                detail = describe_problem(order.error) if order.error else "no detail given"
                raise OrderInvalidError(
                    f"the CA marked the order invalid: {detail}",
                    problem_type=str(order.error.typ) if order.error else "",
                )
            else:
                raise AcmeProblemError(f"order has unknown status {order.status!r}")
            if time.monotonic() > deadline:
                raise OrderTimeoutError(
                    f"order still {order.status} after {self._policy.validation_timeout:.0f}s"
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
        pending = [a for a in authorizations if a.status == AcmeStatus.PENDING]
        to_answer = []
        revision = 0  # the feed revision that carries every value written
        await self.save(CertificateUpdate(stage=Stage.PRESENTING))
        for authorization in pending:
            challenge = self.pick_challenge(authorization)
            method = ChallengeType(str(challenge.chall.typ))
            if method == ChallengeType.DNS_PERSIST01:
                # Nothing to write: the record is in place (checked before ordering); the CA
                # must accept the issuer domain name it carries.
                self.check_persist_issuer(challenge, authorization)
            elif method in DNS_METHODS:
                domain = base_domain(authorization.identifier)
                delegation = await self._dns01.delegation(domain, method, client.account_url)
                value = client.dns01_value(challenge)
                revision = max(revision, await self._dns01.present(delegation, value))
                entry = self.attempt.txt.setdefault(delegation.fulldomain, (delegation, set()))
                entry[1].add(value)
            else:
                token, key_authorization = client.http01_response(challenge)
                await self._http01.present(token, key_authorization, self.row.id)
                self.attempt.tokens.add(token)
            if status_name(challenge.status) == AcmeStatus.PENDING:
                to_answer.append(challenge)
        if self.attempt.txt:
            await self.save(CertificateUpdate(stage=Stage.PROPAGATING))
            await self._dns01.wait_replicas(revision)
            await self._dns01.wait_propagated(
                {fulldomain: values for fulldomain, (_, values) in self.attempt.txt.items()}
            )
        await self.save(CertificateUpdate(stage=Stage.VALIDATING))
        for challenge in to_answer:
            await client.answer_challenge(challenge)
        for authorization in pending:
            await self.poll_authorization(client, authorization, deadline)

    def check_persist_issuer(
        self, challenge: messages.ChallengeBody, authorization: Authorization
    ) -> None:
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

    def pick_challenge(self, authorization: Authorization) -> messages.ChallengeBody:
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
            if current.status == AcmeStatus.VALID:
                return
            if current.status != AcmeStatus.PENDING:
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
                    f"{self._policy.validation_timeout:.0f}s"
                )
            await self.sleep_until(current.retry_after, deadline)

    async def complete(self, client: AcmeClient, order: Order) -> None:
        await self.save(CertificateUpdate(stage=Stage.DOWNLOADING))
        chain = await client.download(order.certificate)
        leaf = leaf_info(chain)
        plan = await self.plan_renewal(client, chain, leaf.not_before, leaf.not_after, fresh=True)
        now = utcnow()
        started = self.row.attempt_start_time
        await self.save(
            CertificateUpdate(
                state=CertificateState.ISSUED,
                stage=Stage.NONE,
                order_url="",
                chain_pem=chain,
                sealed_key=self.reseal_pending_key(),
                sealed_pending_key=None,
                serial_number=leaf.serial_number,
                not_before=leaf.not_before,
                not_after=leaf.not_after,
                renewal_time=plan.renewal_time,
                renewal_source=plan.source,
                issue_time=now,
                revoke_time=None,
                failed_attempts=0,
                last_failure=None,
                renew_requested=False,
                next_attempt_time=plan.next_check,
                attempt_start_time=None,
            )
        )
        if started is not None:
            self._metrics.duration.observe((now - started).total_seconds())
        name = f"certificates/{self.row.id}"
        self._metrics.expiry.labels(name).set(leaf.not_after.timestamp())
        self._metrics.renewal.labels(name).set(plan.renewal_time.timestamp())
        logger.info(
            "certificate issued",
            extra={
                "certificate": self.row.id,
                "serial": leaf.serial_number,
                "renewal_time": plan.renewal_time.isoformat(),
            },
        )

    def reseal_pending_key(self) -> bytes:
        assert self.row.sealed_pending_key is not None
        key = self._sealer.open_key(
            self.row.sealed_pending_key, f"certificate/{self.row.id}/pending"
        )
        return self._sealer.seal_key(key, f"certificate/{self.row.id}")

    async def plan_renewal(
        self,
        client: AcmeClient,
        chain: str,
        not_before: datetime,
        not_after: datetime,
        *,
        fresh: bool,
    ) -> RenewalPlan:
        """Ask the CA's ARI for its window (when it offers one) and plan from the answer."""
        try:
            suggested, next_check = await client.renewal_info(chain.encode())
        except IssuanceError as exc:
            logger.warning("ARI unavailable", extra={"certificate": self.row.id, "error": str(exc)})
            suggested = next_check = None
        return plan_renewal(
            suggested=suggested,
            next_check=next_check,
            not_before=not_before,
            not_after=not_after,
            fresh=fresh,
            now=utcnow(),
            jitter_fraction=self._policy.jitter_fraction,
            rng=self._policy.rng,
        )

    async def recheck_renewal_info(self, client: AcmeClient) -> bool:
        """For an issued certificate that is not due yet: ask ARI again and reschedule.

        True when that is all there was to do; False when the certificate is due for renewal.
        """
        row = self.row
        now = utcnow()
        if (
            row.state != CertificateState.ISSUED
            or row.renew_requested
            or row.renewal_time is None
            or row.renewal_time <= now
            or row.not_before is None
            or row.not_after is None
        ):
            return False
        plan = await self.plan_renewal(
            client, row.chain_pem, row.not_before, row.not_after, fresh=False
        )
        renewal_time, source, next_time = plan.renewal_time, plan.source, plan.next_check
        if source == RenewalSource.LIFETIME and row.renewal_source == RenewalSource.LIFETIME:
            # No ARI now or before: keep the jittered time already planned, not a new draw.
            renewal_time = next_time = row.renewal_time
        if renewal_time <= now:
            logger.info("ARI window reached", extra={"certificate": row.id})
            return False
        await self.save(
            CertificateUpdate(
                renewal_time=renewal_time, renewal_source=source, next_attempt_time=next_time
            )
        )
        self._metrics.renewal.labels(f"certificates/{row.id}").set(renewal_time.timestamp())
        return True

    async def fail(self, exc: IssuanceError) -> None:
        failed = self.row.failed_attempts + 1
        delay = retry_delay(
            failed, self._policy.retry_base, self._policy.retry_max, self._policy.rng
        )
        keep_order = isinstance(exc, _TRANSIENT)
        stage = self.row.stage
        self._metrics.failures.labels(exc.reason).inc()
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
            CertificateUpdate(
                state=CertificateState.FAILED,
                stage=Stage.NONE,
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
        )

    async def withdraw(self) -> None:
        """Take down whatever this attempt published (best effort)."""
        for delegation, values in self.attempt.txt.values():
            for value in values:
                await self._dns01.cleanup(delegation, value)
        for token in self.attempt.tokens:
            await self._http01.cleanup(token)
        self.attempt = _Published()
