"""The README's configuration tables must name every setting a service has, so the docs an
operator reads cannot fall behind the code."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SERVICES = [
    ("registry", "acmezone_registry.settings", "RegistrySettings"),
    ("dns", "acmezone_dns.settings", "DnsSettings"),
    ("issuer", "acmezone_issuer.settings", "IssuerSettings"),
    ("agent", "acmezone_clients.agent.settings", "AgentSettings"),
]


@pytest.mark.parametrize(("service", "module", "class_name"), SERVICES)
def test_every_setting_is_documented(service: str, module: str, class_name: str) -> None:
    # Every service exists: a settings module that fails to import is a failure, not a skip.
    settings_class = getattr(importlib.import_module(module), class_name)
    text = README.read_text()
    heading = re.search(rf"^### {service} \(`(ACMEZONE_\w+_)`\)$", text, re.MULTILINE)
    assert heading, f"README has no configuration table for {service}"
    section = text[heading.end() :].split("\n### ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    fields = {name.upper() for name in settings_class.model_fields}
    assert fields - documented == set(), f"undocumented {service} settings"
    assert documented - fields == set(), f"README documents {service} settings that do not exist"
