"""The agent's errors.

AgentError                 anything the agent refuses or cannot do; never a crash
├── ConfigError            a bad flag or TOML config (names the file and the key)
├── BundleError            an exported bundle that must not be installed (bad PEM, a key
│                          that does not match the certificate, a serial other than asked)
└── InstallError           the files could not be written (the installed set is unchanged)
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's errors; the message is for people."""


class ConfigError(AgentError):
    """A flag or config file value is wrong."""


class BundleError(AgentError):
    """A bundle is not installable."""


class InstallError(AgentError):
    """Writing the files failed; the previous set is still the installed one."""
