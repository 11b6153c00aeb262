"""The fleet view: two agents on two "hosts" report their installs with a delivery token; the
issuer lists each target and whether it runs the current serial (`acmezone cert show`), and its
gauges count current and stale targets with the earliest expiry among the stale ones."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import grpc
import pytest

from acmezone.issuer.v1 import delivery_target_service_pb2 as tpb
from acmezone.issuer.v1 import delivery_target_service_pb2_grpc, delivery_token_service_pb2_grpc
from acmezone.issuer.v1 import delivery_token_service_pb2 as dpb
from acmezone_clients.agent.app import AgentApp
from acmezone_clients.agent.report import target_id
from acmezone_clients.cli.commands import run as cli_run
from acmezone_common.testing import error_info_reason
from tests.clients.agent_support import (
    RestartableIssuer,
    agent_settings,
    restartable_issuer,
    target,
)
from tests.issuer.conftest import AUTH, CA, OPERATOR_TOKEN, ca, fake_dns

__all__ = ["ca", "fake_dns"]

WITHIN = 60.0
CERT = "certificates/fleet"


async def cli(issuer: RestartableIssuer, *argv: str) -> str:
    out = io.StringIO()
    code = await cli_run(["--issuer", issuer.address, "--token", OPERATOR_TOKEN, *argv], out)
    assert code == 0, out.getvalue()
    return out.getvalue()


async def show(issuer: RestartableIssuer) -> str:
    return await cli(issuer, "cert", "show", "fleet")


def agent(issuer: RestartableIssuer, token: str, host: str, directory: Path) -> AgentApp:
    return AgentApp(
        agent_settings(issuer.address, token=token, host=host),
        [target("fleet", directory, "echo reloaded")],
    )


async def targets(issuer: RestartableIssuer) -> list[tpb.DeliveryTarget]:
    stub = delivery_target_service_pb2_grpc.DeliveryTargetServiceStub(issuer.channel)
    page = await stub.ListDeliveryTargets(
        tpb.ListDeliveryTargetsRequest(parent=CERT), metadata=AUTH
    )
    return list(page.delivery_targets)


def gauge(issuer: RestartableIssuer, name: str, **labels: str) -> float | None:
    return issuer.metrics.get_sample_value(name, {"certificate": CERT, **labels})


async def test_fleet_view_follows_what_each_target_runs(tmp_path: Path, ca: CA) -> None:
    async with restartable_issuer(tmp_path / "issuer", ca) as issuer:
        await issuer.start()
        first = await issuer.issue("fleet", "www.fleet.example.test")
        assert "no agent has reported an install yet" in await show(issuer)
        tokens = delivery_token_service_pb2_grpc.DeliveryTokenServiceStub(issuer.channel)
        token = (
            await tokens.CreateDeliveryToken(
                dpb.CreateDeliveryTokenRequest(
                    delivery_token=dpb.DeliveryToken(certificates=[CERT])
                ),
                metadata=AUTH,
            )
        ).secret

        one = agent(issuer, token, "web-1.fra1", tmp_path / "web-1")
        two = agent(issuer, token, "web-2.fra1", tmp_path / "web-2")
        for each in (one, two):
            await each.start()
        try:
            for each in (one, two):
                await each.wait_for(
                    "fleet", lambda s: s.reported_serial == first.serial_number, within=WITHIN
                )
            listed = await targets(issuer)
            assert sorted(t.host for t in listed) == ["web-1.fra1", "web-2.fra1"]
            assert all(t.current for t in listed)
            assert all(t.hook_result == tpb.HOOK_RESULT_SUCCEEDED for t in listed)
            assert {t.name for t in listed} == {
                f"{CERT}/deliveryTargets/{target_id('web-1.fra1', tmp_path / 'web-1')}",
                f"{CERT}/deliveryTargets/{target_id('web-2.fra1', tmp_path / 'web-2')}",
            }
            assert "2 of 2 targets run the current serial" in await show(issuer)

            # web-2's agent stops; the certificate is renewed; web-1 follows, web-2 is stale.
            await two.stop()
            second = await issuer.renew(CERT, first.serial_number)
            await one.wait_for(
                "fleet", lambda s: s.reported_serial == second.serial_number, within=WITHIN
            )
            by_host = {t.host: t for t in await targets(issuer)}
            assert by_host["web-1.fra1"].current
            assert by_host["web-1.fra1"].serial_number == second.serial_number
            assert not by_host["web-2.fra1"].current
            assert by_host["web-2.fra1"].serial_number == first.serial_number
            text = await show(issuer)
            assert "1 of 2 targets run the current serial" in text
            assert re.search(rf"web-2\.fra1 .* {first.serial_number} +NO ", text)

            assert issuer.app is not None
            await issuer.app.reconciler._refresh_gauges()  # what its next tick does
            name = "acmezone_issuer_delivery_targets"
            assert gauge(issuer, name, status="current") == 1
            assert gauge(issuer, name, status="stale") == 1
            stale_expiry = "acmezone_issuer_delivery_stale_expiration_timestamp_seconds"
            assert gauge(issuer, stale_expiry) == first.not_after_time.seconds

            # web-2 comes back and catches up: no stale target, no stale-expiry series.
            two = agent(issuer, token, "web-2.fra1", tmp_path / "web-2")
            await two.start()
            await two.wait_for(
                "fleet", lambda s: s.reported_serial == second.serial_number, within=WITHIN
            )
            assert all(t.current for t in await targets(issuer))
            await issuer.app.reconciler._refresh_gauges()
            assert gauge(issuer, name, status="stale") == 0
            assert gauge(issuer, stale_expiry) is None
        finally:
            await one.stop()
            await two.stop()

        # A delivery token may report but not list, and reports only its certificates.
        stub = delivery_target_service_pb2_grpc.DeliveryTargetServiceStub(issuer.channel)
        scoped = (("authorization", f"Bearer {token}"),)
        with pytest.raises(grpc.aio.AioRpcError) as listing:
            await stub.ListDeliveryTargets(
                tpb.ListDeliveryTargetsRequest(parent=CERT), metadata=scoped
            )
        assert error_info_reason(listing.value) == "DELIVERY_TOKEN_NOT_ALLOWED"
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await stub.ReportDeliveryTarget(
                tpb.ReportDeliveryTargetRequest(
                    parent="certificates/other", delivery_target_id="x"
                ),
                metadata=scoped,
            )
        assert error_info_reason(other.value) == "CERTIFICATE_NOT_IN_SCOPE"
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.ReportDeliveryTarget(
                tpb.ReportDeliveryTargetRequest(parent=CERT, delivery_target_id="x"),
                metadata=scoped,
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_reason(invalid.value) == "INVALID_DELIVERY_TARGET"

        # web-2 is decommissioned: the operator forgets its target.
        web2 = target_id("web-2.fra1", tmp_path / "web-2")
        assert web2 in await cli(issuer, "delivery-target", "list", "fleet")
        assert "deleted" in await cli(issuer, "delivery-target", "delete", "fleet", web2)
        remaining = json.loads(await cli(issuer, "--json", "delivery-target", "list", "fleet"))
        assert [t["host"] for t in remaining] == ["web-1.fra1"]

        # The operator lists, shows and revokes the token with the CLI; the agent is refused.
        token_id = token.split("_")[1]
        listed = await cli(issuer, "delivery-token", "list")
        assert f"deliveryTokens/{token_id}" in listed
        assert token not in listed
        assert CERT in await cli(issuer, "delivery-token", "show", token_id)
        assert "deleted" in await cli(issuer, "delivery-token", "delete", token_id)
        with pytest.raises(grpc.aio.AioRpcError) as revoked:
            await stub.ReportDeliveryTarget(
                tpb.ReportDeliveryTargetRequest(parent=CERT, delivery_target_id="x"),
                metadata=scoped,
            )
        assert error_info_reason(revoked.value) == "DELIVERY_TOKEN_INVALID"
