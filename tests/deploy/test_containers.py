"""The Dockerfile, .dockerignore and docker-compose.yaml.

No Docker engine runs on the machines that run `make test`, so images are not built here; what
can be checked without one is: the Dockerfile's structure (multi-stage, slim base, non-root, no
build tools or index access in the final stages, every install pinned and offline), that the
services accept the environment the images and the compose file give them, that every Python
distribution the images install is pinned in constraints.txt (so the offline wheelhouse is
complete and reproducible), and the compose file's wiring. `docker compose config` runs where a
Docker client with the compose plugin works, and is skipped with the reason otherwise.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from acmezone_dns.settings import DnsSettings
from acmezone_dns.static_zones import load_static_zones
from acmezone_issuer.settings import IssuerSettings
from acmezone_registry.settings import RegistrySettings
from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yaml"
SETTINGS = {"registry": RegistrySettings, "dns": DnsSettings, "issuer": IssuerSettings}
GRPC_PORTS = {"registry": 50051, "dns": 50052, "issuer": 50053}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                result[key] = value
        return result


def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARGs, stages by name), with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            image, _, name = rest.partition(" AS ")
            current = Stage(name.strip(), image.strip())
            stages[current.name] = current
        elif current is None:
            if keyword == "ARG":
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            current.instructions.append((keyword, rest.strip()))
    return args, stages


def resolve_base(stages: dict[str, Stage], args: dict[str, str], name: str) -> list[str]:
    """The chain of bases of a stage, down to the external image."""
    chain = []
    while name in stages:
        chain.append(name)
        name = stages[name].base
    chain.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], name))
    return chain


# -- Dockerfile ----------------------------------------------------------------------------------


def test_one_final_stage_per_service_on_the_slim_python_base() -> None:
    args, stages = dockerfile()
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    for service in SETTINGS:
        chain = resolve_base(stages, args, service)
        assert chain == [service, "runtime", "python:3.11-slim"], chain


def test_builds_compile_on_the_full_image_of_the_same_python() -> None:
    """The venvs are built where gcc is (the dns C accelerator) and copied onto the slim base:
    both must be the same Python, or the venv and the compiled module would not run."""
    args, stages = dockerfile()
    build = resolve_base(stages, args, "build-dns")[-1]
    runtime = resolve_base(stages, args, "dns")[-1]
    assert build == "python:3.11"
    assert runtime == f"{build}-slim"
    for service in SETTINGS:
        assert resolve_base(stages, args, f"build-{service}")[-1] == build
    # A dns image without the accelerator fails its build rather than shipping the slow path.
    assert "import acmezone_dns._native_batch" in " ".join(stages["build-dns"].all("RUN"))


def test_final_images_run_as_a_fixed_non_root_user() -> None:
    _, stages = dockerfile()
    [user] = stages["runtime"].all("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) >= 1000
    assert int(gid) >= 1000
    for service in SETTINGS:
        assert not stages[service].all("USER")  # inherited, never switched back to root
    # The Kubernetes manifests run as the same uid.
    k8s = (ROOT / "deploy" / "k8s" / "base" / "registry.yaml").read_text()
    assert f"runAsUser: {uid}" in k8s


def test_final_images_carry_no_build_tools_and_no_sources() -> None:
    _, stages = dockerfile()
    runtime_run = " ".join(stages["runtime"].all("RUN"))
    assert "pip uninstall" in runtime_run
    assert "pip install" not in runtime_run
    assert "apt-get" not in DOCKERFILE.read_text()  # no packages fetched: wheels only
    for service in SETTINGS:
        stage = stages[service]
        assert not stage.all("RUN"), service
        copies = stage.all("COPY")
        assert copies == [f"--from=build-{service} /opt/venv /opt/venv"], copies
    build_run = " ".join(stages["build-registry"].all("RUN"))
    assert "--without-pip" in build_run  # the service venv gets no pip of its own


def test_every_install_is_pinned_and_offline() -> None:
    _, stages = dockerfile()
    tools_env = stages["tools"].env()
    assert tools_env["PIP_NO_INDEX"] == "1"
    assert tools_env["PIP_FIND_LINKS"].endswith("build/wheelhouse")
    installs = [
        run
        for stage in stages.values()
        for run in stage.all("RUN")
        if "pip" in run and "install" in run
    ]
    assert len(installs) == 5  # tools, three service venvs, and the uninstall in runtime
    for run in installs:
        if "uninstall" in run:
            continue
        assert "-c constraints.txt" in run, run


def test_protos_are_generated_in_the_builder_like_make_protos() -> None:
    _, stages = dockerfile()
    [run] = stages["protos"].all("RUN")
    makefile = (ROOT / "Makefile").read_text()
    assert "-m grpc_tools.protoc -I protos" in run
    assert "-m grpc_tools.protoc -I protos" in makefile
    for flag in ("--python_out=gen/python", "--grpc_python_out=gen/python"):
        assert flag in run
    assert "py.typed" in run


def test_entrypoints_are_the_services_commands() -> None:
    _, stages = dockerfile()
    for service in SETTINGS:
        pyproject = (ROOT / "services" / service / "pyproject.toml").read_text()
        [entrypoint] = stages[service].all("ENTRYPOINT")
        command = yaml.safe_load(entrypoint)[0]
        assert f'{command} = "acmezone_{service}.__main__:main"' in pyproject


def test_images_listen_on_all_interfaces_log_json_and_check_their_grpc_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, stages = dockerfile()
    monkeypatch.chdir(tmp_path)
    for service, settings_class in SETTINGS.items():
        env = stages[service].env()
        prefix = f"ACMEZONE_{service.upper()}_"
        for key, value in env.items():
            if key.startswith(prefix):
                assert key.removeprefix(prefix).lower() in settings_class.model_fields, key
                monkeypatch.setenv(key, value)
        settings = settings_class()
        assert settings.log_format == "json"
        assert str(settings.grpc_address) == f"0.0.0.0:{GRPC_PORTS[service]}"
        assert settings.metrics_address.host == "0.0.0.0"
        exposed = " ".join(stages[service].all("EXPOSE")).split()
        assert str(GRPC_PORTS[service]) in exposed
        assert str(settings.metrics_address.port) in exposed
        [healthcheck] = stages[service].all("HEALTHCHECK")
        assert f"127.0.0.1:{GRPC_PORTS[service]}" in healthcheck


def test_make_images_builds_each_target_with_no_network() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nimages:", 1)[1].split("\n\n", 1)[0]
    assert "wheelhouse" in recipe.splitlines()[0]  # the wheelhouse first
    assert "docker build --network=none --target $$s" in recipe
    assert "for s in registry dns issuer" in recipe


def test_dockerignore_keeps_what_the_build_needs_and_drops_the_rest() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", "var", "gen/python/acmezone"} <= set(lines)
    assert "!build/wheelhouse" in lines
    for needed in ("protos", "services", "constraints.txt", "docker", "gen"):
        assert needed not in lines


# -- pinned dependencies ----------------------------------------------------------------------


def _closure(names: list[str]) -> set[str]:
    """Every distribution installed for `names`, following requirements (markers evaluated,
    extras followed) through the installed metadata."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(n, frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        dist = metadata.distribution(name)
        seen.add(key)
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if requirement.marker and not any(
                requirement.marker.evaluate(env) for env in environments
            ):
                continue
            if canonicalize_name(requirement.name) not in seen:
                todo.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_everything_the_images_install_is_pinned_in_constraints() -> None:
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    ours = {"acmezone-protos", "acmezone-common", "acmezone-registry", "acmezone-dns"}
    ours |= {"acmezone-issuer"}
    installed = _closure(sorted(ours)) | _closure(["grpcio-tools", "setuptools"])
    missing = installed - pinned - {canonicalize_name(n) for n in ours}
    assert not missing, f"add to constraints.txt: {sorted(missing)}"


# -- docker-compose.yaml ----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_runs_the_three_services_postgres_and_pebble() -> None:
    services = compose()["services"]
    assert {"registry", "dns", "issuer", "postgres", "pebble"} <= set(services)
    for name in SETTINGS:
        service = services[name]
        assert service["build"] == {"context": ".", "target": name}
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), port  # nothing published beyond loopback


def _container_path(service: dict[str, Any], path: str) -> Path | None:
    """The repository path a bind mount puts at `path` inside the container, if any."""
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        target = rest.split(":")[0]
        if source.startswith("./") and path.startswith(target + "/"):
            return ROOT / source / path.removeprefix(target + "/")
    return None


def test_compose_environment_is_accepted_by_each_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    services = compose()["services"]
    for name, settings_class in SETTINGS.items():
        prefix = f"ACMEZONE_{name.upper()}_"
        env = dict(services[name]["environment"])
        for key, value in env.items():
            assert key.startswith(prefix), key
            assert key.removeprefix(prefix).lower() in settings_class.model_fields, key
            value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
            if key == "ACMEZONE_DNS_ZONE_FILES":  # a file mounted from the repository
                local = _container_path(services[name], value)
                assert local is not None
                assert local.is_file()
                value = str(local)
            monkeypatch.setenv(key, value)
        settings_class()


def test_compose_wiring_is_consistent() -> None:
    data = compose()
    services = data["services"]
    subnet = ipaddress.ip_network(data["networks"]["acmezone"]["ipam"]["config"][0]["subnet"])
    ip = {
        name: service["networks"]["acmezone"]["ipv4_address"]
        for name, service in services.items()
        if isinstance(service.get("networks"), dict)
    }
    assert all(ipaddress.ip_address(a) in subnet for a in ip.values())
    assert len(set(ip.values())) == len(ip)
    for service in services.values():
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    # Pebble and the issuer resolve through the dns service; HTTP-01 names point at the issuer.
    assert services["pebble"]["command"][-1] == f"{ip['dns']}:5353"
    issuer_env = services["issuer"]["environment"]
    assert issuer_env["ACMEZONE_ISSUER_DNS_RESOLVER"] == f"{ip['dns']}:5353"
    assert services["dns"]["environment"]["ACMEZONE_DNS_NS_ADDRESSES"] == ip["dns"]
    zone = (ROOT / "docker" / "dev-zone" / "example.test.zone").read_text()
    assert f"@    A    {ip['issuer']}" in zone
    assert "pebble:14000" in issuer_env["ACMEZONE_ISSUER_DEFAULT_DIRECTORY_URL"]


def test_the_dev_zone_file_loads_in_the_dns_service() -> None:
    settings = DnsSettings(zone_files=[str(ROOT / "docker" / "dev-zone" / "example.test.zone")])
    zones = load_static_zones(settings)
    assert zones


def test_pebble_setup_writes_a_config_pebble_can_use(tmp_path: Path) -> None:
    import importlib.util
    import json
    import ssl

    spec = importlib.util.spec_from_file_location("pebble_setup", ROOT / "docker/pebble/setup.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(tmp_path)
    config = json.loads((tmp_path / "pebble-config.json").read_text())["pebble"]
    assert config["httpPort"] == 5002  # the issuer's HTTP-01 port
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(config["certificate"], config["privateKey"])
    first = (tmp_path / "ca.pem").read_bytes()
    module.write(tmp_path)  # a second run keeps the CA the issuer already trusts
    assert (tmp_path / "ca.pem").read_bytes() == first


def _docker_compose_unavailable() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on this machine"
    result = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        return f"`docker compose version` failed: {(result.stderr or result.stdout).strip()}"
    return None


def test_docker_compose_config_validates() -> None:
    reason = _docker_compose_unavailable()
    if reason:
        pytest.skip(f"docker compose not available ({reason}); the static checks above still ran")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_compose_file_validates_against_the_compose_schema_offline(tmp_path: Path) -> None:
    """Where the compose plugin is missing (no Docker engine here), Debian's `docker-compose`
    (v1, installed by `make test`) checks the file against the Compose Specification schema
    without a daemon. v1 predates the top-level `name`, so it checks a copy without it."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (Debian package) is not installed; `make test` installs it")
    data = compose()
    assert data.pop("name") == "acmezone"
    copy = tmp_path / "docker-compose.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    result = subprocess.run(
        [binary, "-f", str(copy), "--project-directory", str(ROOT), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # ...and it does reject a broken file.
    data["services"]["dns"]["depends_on"]["registry"]["condition"] = "service_happy"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    broken = subprocess.run(
        [binary, "-f", str(copy), "--project-directory", str(ROOT), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert broken.returncode != 0
    assert "service_happy" in broken.stderr
