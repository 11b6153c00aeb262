"""The acme-dns compatible HTTP API, so acme-dns clients work against the registry unchanged.

`server.HttpApi` serves the routes; `acme_dns` holds acme-dns's wire format (request bodies,
response bodies, error names).
"""

from acmezone_registry.http_api.server import HttpApi

__all__ = ["HttpApi"]
