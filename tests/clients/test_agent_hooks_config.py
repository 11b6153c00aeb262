"""The reload hook (certbot/lego environment, time limit, output tail) and the TOML config."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from acmezone_clients.agent.config import load_config
from acmezone_clients.agent.errors import ConfigError
from acmezone_clients.agent.hooks import OUTPUT_TAIL_BYTES, hook_environment, run_hook


async def test_hook_gets_certbot_and_lego_variables_and_its_exit_code(tmp_path: Path) -> None:
    env = hook_environment(
        certificate="certificates/web",
        serial="abc1",
        directory=str(tmp_path),
        dns_names=("www.example.test", "example.test"),
        fullchain_path=str(tmp_path / "fullchain.pem"),
        key_path=str(tmp_path / "privkey.pem"),
        combined_path=None,
    )
    result = await run_hook(
        'echo "$RENEWED_LINEAGE|$RENEWED_DOMAINS|$LEGO_CERT_PATH|$LEGO_CERT_KEY_PATH'
        '|$LEGO_CERT_DOMAIN|$ACMEZONE_SERIAL"; exit 3',
        env,
        10,
    )
    assert result.exit_code == 3
    assert result.outcome == "failure"
    assert result.output_tail.strip() == (
        f"{tmp_path}|www.example.test example.test|{tmp_path}/fullchain.pem"
        f"|{tmp_path}/privkey.pem|www.example.test|abc1"
    )


async def test_hook_is_killed_at_its_time_limit_with_its_children() -> None:
    started = time.monotonic()
    result = await run_hook("sleep 30 & echo started; wait", {}, 0.5)
    assert time.monotonic() - started < 5
    assert result.exit_code is None
    assert result.outcome == "timeout"
    assert "started" in result.output_tail


async def test_only_the_output_tail_is_kept() -> None:
    result = await run_hook("head -c 100000 /dev/zero | tr '\\0' x; echo END", {}, 10)
    assert result.ok
    assert len(result.output_tail) == OUTPUT_TAIL_BYTES
    assert result.output_tail.endswith("END\n")


def test_config_with_several_certificates(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[[certificate]]
name = "web"
dir = "{tmp_path}/web"
reload_command = "nginx -s reload"
key_mode = "0640"
group = 0

[[certificate]]
name = "certificates/lb"
dir = "{tmp_path}/lb"
hook_timeout_seconds = 5
[certificate.files]
combined = "haproxy.pem"
fullchain = "chain-full.pem"
"""
    )
    web, lb = load_config(config)
    assert web.certificate == "certificates/web"
    assert web.ownership.key_mode == 0o640
    assert web.ownership.group == 0
    assert web.reload_command == "nginx -s reload"
    assert lb.certificate_id == "lb"
    assert lb.names.combined == "haproxy.pem"
    assert lb.names.fullchain == "chain-full.pem"
    assert lb.names.privkey == "privkey.pem"
    assert lb.hook_timeout == 5.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "no \\[\\[certificate\\]\\] tables"),
        ('[[certificate]]\nname = "a"\n', "`dir`"),
        ('[[certificate]]\ndir = "/x"\n', "`name`"),
        ('[[certificate]]\nname = "a"\ndir = "/x"\nreload = "x"\n', "unknown keys"),
        ('[[certificate]]\nname = "a"\ndir = "/x"\nkey_mode = "999"\n', "octal mode"),
        ('[[certificate]]\nname = "a"\ndir = "/x"\n[certificate.files]\ncert = "../x"\n', "/"),
        (
            '[[certificate]]\nname = "a"\ndir = "/x"\n[[certificate]]\nname = "b"\ndir = "/x"\n',
            "two certificates",
        ),
        ("[[certificate]\n", "Expected"),
        ('issuer = "x"\n', "unknown top-level"),
        ("certificate = [1]\n", "array of tables"),
        ('[[certificate]]\nname = "a"\ndir = "/x"\nowner = 1.5\n', "owner: a name or a numeric id"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, body: str, message: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_config(config)
