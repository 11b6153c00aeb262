"""`acmezone delivery-token create|list|show|delete`: the scoped credentials agents use;
`acmezone delivery-target list|delete` and the table `acmezone cert show` prints: the fleet.

Kept out of `commands` so the certificate commands there stay one module of their own; the
parser hooks these in with `add_commands`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import grpc

from acmezone.issuer.v1 import delivery_target_service_pb2 as tpb
from acmezone.issuer.v1 import (
    delivery_target_service_pb2_grpc,
    delivery_token_service_pb2_grpc,
)
from acmezone.issuer.v1 import delivery_token_service_pb2 as dpb
from acmezone_clients.cli import output
from acmezone_common.names import resource_name

if TYPE_CHECKING:
    from acmezone_clients.cli.commands import Cli


def _stub(cli: Cli) -> delivery_token_service_pb2_grpc.DeliveryTokenServiceAsyncStub:
    return delivery_token_service_pb2_grpc.DeliveryTokenServiceStub(cli.channel(cli.args.issuer))


def _token_name(value: str) -> str:
    return resource_name("deliveryTokens", value)


def _cert_name(value: str) -> str:
    return resource_name("certificates", value)


def describe(token: dpb.DeliveryToken) -> str:
    lines = [
        f"name:         {token.name}",
        f"certificates: {', '.join(token.certificates)}",
        f"description:  {token.description or '-'}",
        f"created:      {output.when(token.create_time)}",
    ]
    if token.secret:
        lines += [
            "",
            "The token, shown this once (give it to the agent as ACMEZONE_AGENT_TOKEN):",
            f"  {token.secret}",
        ]
    return "\n".join(lines)


async def cmd_create(cli: Cli) -> int:
    a = cli.args
    token = await _stub(cli).CreateDeliveryToken(
        dpb.CreateDeliveryTokenRequest(
            delivery_token=dpb.DeliveryToken(
                certificates=[_cert_name(c) for c in a.cert], description=a.description or ""
            ),
            delivery_token_id=a.id or "",
        ),
        metadata=cli.issuer_metadata,
    )
    cli.emit(token, describe(token))
    return 0


async def cmd_list(cli: Cli) -> int:
    tokens: list[dpb.DeliveryToken] = []
    page_token = ""
    while True:
        page = await _stub(cli).ListDeliveryTokens(
            dpb.ListDeliveryTokensRequest(page_size=100, page_token=page_token),
            metadata=cli.issuer_metadata,
        )
        tokens += page.delivery_tokens
        page_token = page.next_page_token
        if not page_token:
            break
    rows = [
        [t.name, ",".join(t.certificates), t.description, output.when(t.create_time)]
        for t in tokens
    ]
    cli.emit(list(tokens), output.table(["NAME", "CERTIFICATES", "DESCRIPTION", "CREATED"], rows))
    return 0


async def cmd_show(cli: Cli) -> int:
    token = await _stub(cli).GetDeliveryToken(
        dpb.GetDeliveryTokenRequest(name=_token_name(cli.args.name)), metadata=cli.issuer_metadata
    )
    cli.emit(token, describe(token))
    return 0


async def cmd_delete(cli: Cli) -> int:
    name = _token_name(cli.args.name)
    await _stub(cli).DeleteDeliveryToken(
        dpb.DeleteDeliveryTokenRequest(name=name), metadata=cli.issuer_metadata
    )
    cli.emit({"deleted": name}, f"deleted {name}; agents presenting it are refused from now on")
    return 0


_HOOK = {
    tpb.HOOK_RESULT_NONE: "-",
    tpb.HOOK_RESULT_SUCCEEDED: "ok",
    tpb.HOOK_RESULT_FAILED: "failed",
    tpb.HOOK_RESULT_TIMED_OUT: "timed out",
}


def _targets_stub(cli: Cli) -> delivery_target_service_pb2_grpc.DeliveryTargetServiceAsyncStub:
    return delivery_target_service_pb2_grpc.DeliveryTargetServiceStub(cli.channel(cli.args.issuer))


async def list_targets(cli: Cli, certificate: str) -> list[tpb.DeliveryTarget]:
    """Every target of a certificate, all pages."""
    targets: list[tpb.DeliveryTarget] = []
    page_token = ""
    while True:
        page = await _targets_stub(cli).ListDeliveryTargets(
            tpb.ListDeliveryTargetsRequest(
                parent=certificate, page_size=100, page_token=page_token
            ),
            metadata=cli.issuer_metadata,
        )
        targets += page.delivery_targets
        page_token = page.next_page_token
        if not page_token:
            return targets


async def cmd_target_list(cli: Cli) -> int:
    certificate = _cert_name(cli.args.certificate)
    targets = await list_targets(cli, certificate)
    cli.emit(list(targets), (await targets_table(cli, certificate)).lstrip("\n"))
    return 0


async def cmd_target_delete(cli: Cli) -> int:
    target = cli.args.target
    name = (
        target
        if "/deliveryTargets/" in target
        else f"{_cert_name(cli.args.certificate)}/deliveryTargets/{target}"
    )
    await _targets_stub(cli).DeleteDeliveryTarget(
        tpb.DeleteDeliveryTargetRequest(name=name), metadata=cli.issuer_metadata
    )
    cli.emit({"deleted": name}, f"deleted {name}")
    return 0


async def targets_table(cli: Cli, certificate: str) -> str:
    """A "Delivered to" heading and one row per target, or "" when the issuer predates the
    fleet view."""
    try:
        targets = await list_targets(cli, certificate)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED):
            return ""
        raise
    if not targets:
        return "\n\nDelivered to: no agent has reported an install yet."
    rows = [
        [
            t.name.rsplit("/", 1)[-1],
            t.host,
            t.directory,
            t.serial_number,
            "yes" if t.current else "NO",
            output.when(t.install_time),
            _HOOK.get(t.hook_result, "?")
            + (f" (exit {t.hook_exit_code})" if t.hook_exit_code else ""),
        ]
        for t in targets
    ]
    stale = sum(1 for t in targets if not t.current)
    summary = f"{len(targets) - stale} of {len(targets)} targets run the current serial"
    headers = ["TARGET", "HOST", "DIRECTORY", "SERIAL", "CURRENT", "INSTALLED", "HOOK"]
    return f"\n\nDelivered to ({summary}):\n" + output.table(headers, rows)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`delivery-token` and its verbs."""
    tokens = sub.add_parser(
        "delivery-token", help="credentials for delivery agents, scoped to certificates"
    ).add_subparsers(dest="sub", required=True)
    create = tokens.add_parser("create", help="create a token; prints it once")
    create.add_argument(
        "--cert", action="append", required=True, help="certificate the token covers (repeatable)"
    )
    create.add_argument("--id", help="token id (default: random)")
    create.add_argument("--description", help="what the token is for")
    create.set_defaults(run=cmd_create)
    tokens.add_parser("list", help="list tokens (no secrets)").set_defaults(run=cmd_list)
    show = tokens.add_parser("show", help="show one token (no secret)")
    show.add_argument("name")
    show.set_defaults(run=cmd_show)
    delete = tokens.add_parser("delete", help="revoke a token at once")
    delete.add_argument("name")
    delete.set_defaults(run=cmd_delete)

    targets = sub.add_parser(
        "delivery-target", help="where agents installed a certificate (the fleet view)"
    ).add_subparsers(dest="sub", required=True)
    tlist = targets.add_parser("list", help="a certificate's targets, current or not")
    tlist.add_argument("certificate")
    tlist.set_defaults(run=cmd_target_list)
    tdelete = targets.add_parser("delete", help="forget a target (a decommissioned host)")
    tdelete.add_argument("certificate")
    tdelete.add_argument("target", help="target id (first column of the list) or full name")
    tdelete.set_defaults(run=cmd_target_delete)
