"""The agent's command line, shared by `acmezone agent` and the `acmezone-agent` script."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from acmezone_clients.agent.app import AgentApp
from acmezone_clients.agent.config import (
    DEFAULT_HOOK_TIMEOUT,
    Target,
    certificate_name,
    load_config,
    target_from_table,
)
from acmezone_clients.agent.errors import AgentError
from acmezone_clients.agent.files import Installer
from acmezone_clients.agent.hooks import hook_environment, run_hook
from acmezone_clients.agent.settings import AgentSettings
from acmezone_common.runner import serve_until_signalled


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of one target, or --config for several."""
    parser.add_argument("--cert", help="certificate id or name to install (or use --config)")
    parser.add_argument("--dir", type=Path, help="directory to install the files into")
    parser.add_argument("--reload-command", help="shell command run after each install")
    parser.add_argument("--hook-timeout", type=float, default=DEFAULT_HOOK_TIMEOUT, help="seconds")
    parser.add_argument("--combined", help="also write key+chain under this name (HAProxy)")
    parser.add_argument("--owner", help="owner of the installed files")
    parser.add_argument("--group", help="group of the installed files")
    parser.add_argument("--key-mode", default="0600", help="mode of the key files (octal)")
    parser.add_argument("--config", type=Path, help="TOML file with [[certificate]] tables")
    parser.add_argument("--tls", action="store_true", help="TLS to the issuer (system roots)")
    parser.add_argument("--ca-file", type=Path, help="CA bundle to verify the issuer (TLS)")
    parser.add_argument("--client-cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--client-key", type=Path, help="key of --client-cert")
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="make the previously installed set current again, run the hook, and exit",
    )


def targets_from_args(args: argparse.Namespace) -> list[Target]:
    """The targets the flags name; ConfigError when they are contradictory or incomplete."""
    if args.config is not None:
        if args.cert or args.dir:
            raise AgentError("--config and --cert/--dir exclude each other")
        return load_config(args.config)
    if not args.cert or args.dir is None:
        raise AgentError("give --cert NAME --dir DIR, or --config FILE")
    table: dict[str, object] = {
        "name": certificate_name(args.cert),
        "dir": str(args.dir),
        "hook_timeout_seconds": args.hook_timeout,
        "key_mode": args.key_mode,
    }
    if args.reload_command:
        table["reload_command"] = args.reload_command
    if args.combined:
        table["files"] = {"combined": args.combined}
    if args.owner:
        table["owner"] = int(args.owner) if args.owner.isdigit() else args.owner
    if args.group:
        table["group"] = int(args.group) if args.group.isdigit() else args.group
    return [target_from_table(table, "flags")]


async def rollback(targets: list[Target]) -> int:
    """Swap each target back to its previous set and run its hook."""
    for target in targets:
        installer = Installer(target.directory, target.names, target.ownership)
        serial = await asyncio.to_thread(installer.rollback)
        print(f"{target.certificate}: rolled back to {serial}")
        if target.reload_command:
            env = hook_environment(
                certificate=target.certificate,
                serial=serial,
                directory=str(target.directory),
                dns_names=(),
                fullchain_path=str(installer.live_path(target.names.fullchain)),
                key_path=str(installer.live_path(target.names.privkey)),
                combined_path=None,
            )
            result = await run_hook(target.reload_command, env, target.hook_timeout)
            if not result.ok:
                print(f"hook failed ({result.outcome}): {result.output_tail}", file=sys.stderr)
                return 1
    return 0


async def run_agent(args: argparse.Namespace, settings: AgentSettings) -> int:
    """Run the agent until SIGTERM/SIGINT (or roll back and exit); 2 on a bad configuration."""
    tls: dict[str, object] = {
        key: value
        for key, value in (
            ("tls", args.tls or None),
            ("tls_ca_file", args.ca_file),
            ("tls_client_cert_file", args.client_cert),
            ("tls_client_key_file", args.client_key),
        )
        if value is not None
    }
    settings = settings.model_copy(update=tls)
    try:
        targets = targets_from_args(args)
        if args.rollback:
            return await rollback(targets)
        app = AgentApp(settings, targets)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    await serve_until_signalled(app, grace=1.0)
    return 0
