"""What the agent installs where: one target from flags, or several from a TOML file.

[[certificate]]
name = "web"                        # certificates/web
dir = "/etc/ssl/acmezone/web"
reload_command = "systemctl reload nginx"
hook_timeout_seconds = 60           # optional
owner = "root"                      # optional: user name or uid
group = "ssl-cert"                  # optional: group name or gid
key_mode = "0640"                   # optional, default 0600 (also the combined file)
cert_mode = "0644"                  # optional
[certificate.files]                 # optional, these are the defaults
fullchain = "fullchain.pem"
privkey = "privkey.pem"
cert = "cert.pem"
chain = "chain.pem"
combined = "haproxy.pem"            # only written when named
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from acmezone_clients.agent.errors import ConfigError
from acmezone_clients.agent.files import FileNames, Ownership
from acmezone_common.names import resource_name

DEFAULT_HOOK_TIMEOUT = 60.0
_TARGET_KEYS = {
    "name",
    "dir",
    "reload_command",
    "hook_timeout_seconds",
    "owner",
    "group",
    "key_mode",
    "cert_mode",
    "files",
}
_FILE_KEYS = {"fullchain", "privkey", "cert", "chain", "combined"}


@dataclass(frozen=True)
class Target:
    """One certificate and where and how to install it."""

    certificate: str
    directory: Path
    names: FileNames
    ownership: Ownership
    reload_command: str | None
    hook_timeout: float

    @property
    def certificate_id(self) -> str:
        return self.certificate.removeprefix("certificates/")


def certificate_name(value: str) -> str:
    """`web` or `certificates/web` -> `certificates/web`."""
    return resource_name("certificates", value)


def _mode(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            raise ConfigError(f'{where}: {value!r} is not an octal mode such as "0640"') from None
    else:
        raise ConfigError(f'{where}: a mode is an octal string such as "0640"')
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"{where}: mode {value!r} is out of range")
    return mode


def _file_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
        raise ConfigError(f"{where}: a file name without '/' and not starting with '.'")
    return value


def _owner(value: object, where: str) -> str | int | None:
    if value is not None and not isinstance(value, str | int):
        raise ConfigError(f"{where}: a name or a numeric id")
    return value


def target_from_table(table: Mapping[str, object], where: str) -> Target:
    """One `[[certificate]]` table; unknown keys are refused so typos do not pass silently."""
    unknown = set(table) - _TARGET_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = table.get("name")
    directory = table.get("dir")
    if not isinstance(name, str) or not name.removeprefix("certificates/"):
        raise ConfigError(f"{where}: `name` (the certificate id) is required")
    if not isinstance(directory, str) or not directory:
        raise ConfigError(f"{where}: `dir` (the directory to install into) is required")
    files = table.get("files", {})
    if not isinstance(files, dict) or set(files) - _FILE_KEYS:
        raise ConfigError(f"{where}.files: only {sorted(_FILE_KEYS)} may be set")
    names = FileNames(**{k: _file_name(v, f"{where}.files.{k}") for k, v in files.items()})
    if len(set(names.all())) != len(names.all()):
        raise ConfigError(f"{where}.files: two files have the same name")
    hook = table.get("reload_command")
    if hook is not None and not isinstance(hook, str):
        raise ConfigError(f"{where}.reload_command: a shell command string")
    timeout = table.get("hook_timeout_seconds", DEFAULT_HOOK_TIMEOUT)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"{where}.hook_timeout_seconds: a positive number of seconds")
    return Target(
        certificate=certificate_name(name),
        directory=Path(directory),
        names=names,
        ownership=Ownership(
            owner=_owner(table.get("owner"), f"{where}.owner"),
            group=_owner(table.get("group"), f"{where}.group"),
            key_mode=_mode(table.get("key_mode", "0600"), f"{where}.key_mode"),
            cert_mode=_mode(table.get("cert_mode", "0644"), f"{where}.cert_mode"),
        ),
        reload_command=hook or None,
        hook_timeout=float(timeout),
    )


def load_config(path: Path) -> list[Target]:
    """The targets of a TOML config file."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(data) - {"certificate"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    tables = data.get("certificate")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[certificate]] tables")
    if not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: `certificate` must be an array of tables ([[certificate]])")
    targets = [target_from_table(t, f"{path}: certificate[{i}]") for i, t in enumerate(tables)]
    seen: set[Path] = set()
    for target in targets:
        if target.directory.resolve() in seen:
            raise ConfigError(f"{path}: two certificates install into {target.directory}")
        seen.add(target.directory.resolve())
    return targets
