"""The README's configuration tables must name every setting a service has, with its real
default, so the docs an operator reads cannot fall behind the code."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

README = Path(__file__).resolve().parent.parent / "README.md"
SERVICES = [
    ("registry", "acmezone_registry.settings", "RegistrySettings"),
    ("dns", "acmezone_dns.settings", "DnsSettings"),
    ("issuer", "acmezone_issuer.settings", "IssuerSettings"),
    ("agent", "acmezone_clients.agent.settings", "AgentSettings"),
]
# A literal default: the cell starts with one backquoted value (prose may follow it, as in
# "`0` (keep)"); a template such as `hostmaster.<zone>` is prose.
LITERAL = re.compile(r"`([^`<>]*)`(?:\s|$)")


def settings_class(module: str, class_name: str) -> type[BaseSettings]:
    # Every service exists: a settings module that fails to import is a failure, not a skip.
    found: type[BaseSettings] = getattr(importlib.import_module(module), class_name)
    return found


def table(service: str) -> dict[str, str]:
    """The service's documented settings: variable (without the prefix) -> its default cell."""
    text = README.read_text()
    heading = re.search(rf"^### {service} \(`(ACMEZONE_\w+_)`\)$", text, re.MULTILINE)
    assert heading, f"README has no configuration table for {service}"
    section = text[heading.end() :].split("\n### ", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", section, re.MULTILINE))


@pytest.mark.parametrize(("service", "module", "class_name"), SERVICES)
def test_every_setting_is_documented(service: str, module: str, class_name: str) -> None:
    documented = set(table(service))
    fields = {name.upper() for name in settings_class(module, class_name).model_fields}
    assert fields - documented == set(), f"undocumented {service} settings"
    assert documented - fields == set(), f"README documents {service} settings that do not exist"


def documented_as(field: FieldInfo, literal: str) -> bool:
    """Whether the README's literal is the field's default, spelled as its environment value."""
    default = field.get_default(call_default_factory=True)
    if default is None:
        return False
    if isinstance(default, bool):
        return literal == str(default).lower()
    if isinstance(default, int | float):
        return float(literal) == default
    if isinstance(default, list):
        return bool(json.loads(literal) == [str(item) for item in default])
    return literal == str(default)


@pytest.mark.parametrize(("service", "module", "class_name"), SERVICES)
def test_documented_defaults_are_the_real_ones(service: str, module: str, class_name: str) -> None:
    """A default written as a value must be the field's default; one told in words ("unset",
    "SQLite in `DATA_DIR`", "the host name") belongs to a field that is unset (None) by default
    or computed at start."""
    fields = settings_class(module, class_name).model_fields
    wrong = {}
    for variable, cell in table(service).items():
        field = fields.get(variable.lower())
        if field is None:
            continue  # the test above names it
        literal = LITERAL.match(cell)
        if literal is not None:
            if not documented_as(field, literal.group(1)):
                wrong[variable] = (cell, field.get_default(call_default_factory=True))
        elif field.default_factory is None and field.default is not None:
            wrong[variable] = (cell, field.default)
    assert wrong == {}, f"README defaults of {service} differ from the code: (README, code)"
