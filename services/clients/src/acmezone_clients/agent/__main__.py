"""`acmezone-agent`: the delivery agent on its own, with defaults from `ACMEZONE_AGENT_*`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from pydantic import SecretStr

from acmezone_clients.agent.cli import add_agent_arguments, run_agent
from acmezone_clients.agent.settings import AgentSettings
from acmezone_common.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, configure logging, run until SIGTERM."""
    settings = AgentSettings()
    parser = argparse.ArgumentParser(
        prog="acmezone-agent",
        description="Install certificates from the acmezone issuer and keep them current.",
    )
    parser.add_argument("--issuer", default=settings.issuer, help="issuer gRPC address")
    parser.add_argument("--token", help="delivery token (default: ACMEZONE_AGENT_TOKEN)")
    add_agent_arguments(parser)
    args = parser.parse_args(argv)
    update: dict[str, object] = {"issuer": args.issuer}
    if args.token:
        update["token"] = SecretStr(args.token)
    settings = settings.model_copy(update=update)
    configure_logging(settings.log_level, settings.log_format)
    raise SystemExit(asyncio.run(run_agent(args, settings)))


if __name__ == "__main__":
    main()
