"""The container files cannot drift from the code: ``docker/compose.yaml``, the Dockerfiles and
``docker/README.md`` name only settings, commands, modules and files that exist.

No container engine is needed: the compose file is read as YAML (with its anchors merged and
its ``${VAR:-default}`` references at their defaults), each Dockerfile line by line, and every
command is parsed by the click command it names, exactly as it would be on start-up (options,
arguments and subcommands included) without running it.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.util
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from transcriber.config import Settings

ROOT = Path(__file__).parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
README = DOCKER / "README.md"
DOCKERFILES = sorted(
    p for p in DOCKER.glob("Dockerfile*") if p.is_file() and not p.name.endswith("ignore")
)

SETTING_NAMES = frozenset(f"TRANSCRIBER_{name.upper()}" for name in Settings.model_fields)
SETTING_REFERENCE = re.compile(r"\bTRANSCRIBER_[A-Z0-9_]+\b")
PYTHONS = frozenset({"python", "python3", "python3.11"})
# Celery subcommands that other packages provide, and the images that carry them.
EXTERNAL_CELERY_COMMANDS = {"flower": "mher/flower"}
# Programs our own images may run besides the project's entry points (healthchecks, shells).
OWN_IMAGE_UTILITIES = frozenset({"sh", "bash", "cat", "true", "test"})
DEPENDENCY_CONDITIONS = frozenset(
    {"service_started", "service_healthy", "service_completed_successfully"}
)
SHELL_OPERATORS = frozenset({"|", "||", "&&", ";", "&"})


# --- reading the files ---------------------------------------------------------------------


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """``value`` with Compose's ``$$``, ``$VAR`` and ``${VAR…}`` forms resolved against ``env``
    (by default: an empty environment, so that every reference takes its default)."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        is_set, current = name in env, env.get(name, "")
        if op == ":-":
            return current or arg
        if op == "-":
            return current if is_set else arg
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return arg if is_set else ""
        return current  # ${VAR}, and ${VAR:?error} / ${VAR?error} when VAR is set

    pattern = r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-+?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
    return re.sub(pattern, one, value)


def variables_in(value: str) -> set[str]:
    """The names of the variables a Compose string refers to."""
    text = value.replace("$$", "")
    return set(re.findall(r"\$\{(\w+)", text)) | set(re.findall(r"\$([A-Za-z_]\w*)", text))


@cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{COMPOSE_FILE} is not a YAML mapping"
    return document


def services() -> dict[str, dict[str, Any]]:
    found = compose().get("services")
    assert isinstance(found, dict), f"{COMPOSE_FILE}: services is not a mapping"
    assert found, f"{COMPOSE_FILE} has no services"
    return found


def strings_in(node: object) -> Iterator[str]:
    """Every string (keys included) anywhere in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or list form), interpolated at the defaults."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = {item.partition("=")[0]: item.partition("=")[2] for item in raw}
    return {str(k): interpolate("" if v is None else str(v)) for k, v in raw.items()}


def argv_of(command: object) -> list[str]:
    """A Compose or Dockerfile command as an argument list, interpolated at the defaults."""
    if isinstance(command, str):
        return shlex.split(interpolate(command))
    assert isinstance(command, list), f"a command must be a string or a list, not {command!r}"
    return [interpolate(str(part)) for part in command]


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction]

    def env(self) -> dict[str, str]:
        """The ENV of the last stage (the image that runs)."""
        last_from = max(i for i, ins in enumerate(self.instructions) if ins.keyword == "FROM")
        values: dict[str, str] = {}
        for ins in self.instructions[last_from:]:
            if ins.keyword == "ENV":
                values.update(parse_env(ins.arguments))
        return values

    def final(self, keyword: str) -> Instruction | None:
        last_from = max(i for i, ins in enumerate(self.instructions) if ins.keyword == "FROM")
        found = [ins for ins in self.instructions[last_from:] if ins.keyword == keyword]
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with their continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit even inside a continued instruction
        if not pending:
            start = number
        continued = line.endswith("\\")
        pending.append(line[:-1].strip() if continued else line)
        if not continued:
            text = " ".join(pending)
            keyword, _, arguments = text.partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, f"{path.name}: the last instruction ends with a line continuation"
    return Dockerfile(path, instructions)


def parse_env(arguments: str) -> dict[str, str]:
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV NAME value with spaces
        return {tokens[0]: " ".join(tokens[1:])}
    return {token.partition("=")[0]: token.partition("=")[2] for token in tokens}


def exec_or_shell_form(arguments: str) -> list[str]:
    if arguments.startswith("["):
        argv = json.loads(arguments)
        assert isinstance(argv, list), f"not an exec-form command: {arguments}"
        return [str(a) for a in argv]
    return ["sh", "-c", arguments]


@cache
def dockerfiles() -> dict[str, Dockerfile]:
    return {path.name: parse_dockerfile(path) for path in DOCKERFILES}


def build_of(service: Mapping[str, Any]) -> tuple[Path, Path] | None:
    """(context, Dockerfile) of a service that builds its image, else None."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / interpolate(str(build.get("context", ".")))).resolve()
    return context, context / interpolate(str(build.get("dockerfile", "Dockerfile")))


def own_services() -> dict[str, tuple[dict[str, Any], Dockerfile]]:
    """Services whose image is built from one of our Dockerfiles."""
    found = {}
    for name, service in services().items():
        built = build_of(service)
        if built and built[1].name in dockerfiles() and built[1].parent == DOCKER:
            found[name] = (service, dockerfiles()[built[1].name])
    return found


# --- checking commands ---------------------------------------------------------------------


def _parse(
    command: click.Command, name: str, args: list[str], parent: click.Context | None
) -> None:
    """Parse ``args`` the way ``command`` does on start-up (callbacks of options included,
    the command itself not run), down through its subcommands."""
    context = command.context_class(command, info_name=name, parent=parent)
    if parent is not None:
        context.obj = parent.obj
    with context.scope(cleanup=False):
        rest = click.Command.parse_args(command, context, list(args))
    if isinstance(command, click.Group):
        if not rest:
            choices = ", ".join(sorted(command.commands))
            raise click.UsageError(f"`{name}` needs a subcommand: one of {choices}")
        sub_name, sub, sub_args = command.resolve_command(context, rest)
        if sub is None or sub_name is None:  # resolve_command fails first unless resilient
            raise click.UsageError(f"`{name}` has no subcommand {rest[0]!r}")
        _parse(sub, sub_name, sub_args, context)


def _transcriber(argv: Sequence[str]) -> None:
    from transcriber.cli import main

    _parse(main, "transcriber", list(argv[1:]), None)


@cache
def _celery_plugins() -> dict[str, click.Command]:
    """The ``celery.commands`` entry points that pyproject.toml declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = project["project"].get("entry-points", {}).get("celery.commands", {})
    plugins = {}
    for name, target in declared.items():
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), f"{target} is not a click command"
        plugins[name] = command
    return plugins


def _celery(argv: Sequence[str], image: str | None) -> None:
    celery_main = importlib.import_module("celery.bin.celery").celery
    assert isinstance(celery_main, click.Group)
    context = celery_main.context_class(celery_main, info_name="celery")
    with context.scope(cleanup=False):
        rest = click.Command.parse_args(celery_main, context, list(argv[1:]))
    if not rest:
        raise click.UsageError("names no celery subcommand")
    name, args = rest[0], rest[1:]
    if name in EXTERNAL_CELERY_COMMANDS:
        provider = EXTERNAL_CELERY_COMMANDS[name]
        if not (image or "").startswith(provider):
            raise click.UsageError(
                f"`celery {name}` is not installed with the project; run it from {provider}"
            )
        return
    app = context.params.get("app")
    if app != "workers":
        raise click.UsageError(f"`celery {name}` needs `-A workers` (the app), got -A {app}")
    command = _celery_plugins().get(name) or celery_main.commands.get(name)
    if command is None:
        known = sorted({*celery_main.commands, *_celery_plugins(), *EXTERNAL_CELERY_COMMANDS})
        raise click.UsageError(f"no celery subcommand {name!r}; known: {', '.join(known)}")
    cli_context = importlib.import_module("celery.bin.base").CLIContext
    context.obj = cli_context(
        app=importlib.import_module("workers").app, no_color=True, workdir=None, quiet=True
    )
    _parse(command, name, list(args), context)


def _python(argv: Sequence[str]) -> None:
    args = list(argv[1:])
    if args[:1] == ["-m"] and len(args) > 1:
        if importlib.util.find_spec(args[1]) is None:
            raise click.UsageError(f"python -m {args[1]}: no such module")
    elif args[:1] == ["-c"] and len(args) > 1:
        _check_imports(args[1])
    else:
        raise click.UsageError("expected `python -m MODULE` or `python -c CODE`")


def _check_imports(code: str) -> None:
    tree = ast.parse(code)  # a SyntaxError names the line
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            module = importlib.import_module(node.module)
            for alias in node.names:
                submodule = hasattr(module, "__path__") and importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                )
                if not hasattr(module, alias.name) and not submodule:
                    raise click.UsageError(
                        f"`from {node.module} import {alias.name}`: no such name"
                    )


def check_command(argv: Sequence[str], where: str, *, own_image: bool, image: str | None) -> None:
    """Fail, naming ``where``, unless ``argv`` runs something that exists."""
    if not argv:
        pytest.fail(f"{where}: empty command")
    program = Path(argv[0]).name
    try:
        if program == "transcriber":
            _transcriber(argv)
        elif program == "celery":
            _celery(argv, image)
        elif program in PYTHONS:
            _python(argv)
        elif program in {"sh", "bash"} and argv[1:2] == ["-c"] and len(argv) > 2:
            for segment in shell_commands(argv[2]):
                check_command(segment, where, own_image=own_image, image=image)
        elif own_image and program not in OWN_IMAGE_UTILITIES:
            raise click.UsageError(f"{program!r} is not a program of this image")
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{shown(argv)}`: {exc.format_message()}")
    except (ImportError, SyntaxError) as exc:
        pytest.fail(f"{where}: `{shown(argv)}`: {exc}")


def shown(argv: Sequence[str]) -> str:
    """A command for a message, with an inline script cut to its first line."""
    return shlex.join(a if "\n" not in a else a.split("\n", 1)[0] + " …" for a in argv)


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a one-line shell script (split at | || && ; &)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def commands_of(name: str, service: Mapping[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(where, argv) for the command, entrypoint and healthcheck of a service."""
    own = own_services().get(name)
    entrypoint = argv_of(service["entrypoint"]) if "entrypoint" in service else []
    if "command" in service:
        yield f"services.{name}.command", [*entrypoint, *argv_of(service["command"])]
    elif own:
        cmd = own[1].final("CMD")
        if cmd is not None and not entrypoint:
            yield f"services.{name} (CMD of {own[1].path.name})", exec_or_shell_form(cmd.arguments)
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if test and test[0] in {"CMD", "CMD-SHELL"}:
        where = f"services.{name}.healthcheck"
        if test[0] == "CMD":
            yield where, argv_of(test[1:])
        else:
            yield where, ["sh", "-c", interpolate(str(test[1]))]


def option_value(argv: Sequence[str], *names: str) -> str | None:
    for index, token in enumerate(argv):
        for name in names:
            if token == name and index + 1 < len(argv):
                return argv[index + 1]
            if name.startswith("--") and token.startswith(f"{name}="):
                return token.split("=", 1)[1]
            if not name.startswith("--") and token.startswith(name) and len(token) > len(name):
                return token[len(name) :]
    return None


def worker_queues(argv: Sequence[str]) -> set[str]:
    value = option_value(argv, "-Q", "--queues")
    return set(value.split(",")) if value else set()


def is_worker(argv: Sequence[str]) -> bool:
    return Path(argv[0]).name == "celery" and "worker" in argv


# --- compose --------------------------------------------------------------------------------


def test_compose_is_parsed_with_services() -> None:
    assert COMPOSE_FILE.is_file(), "docker/compose.yaml is missing"
    assert services()


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_has_an_image_or_a_build(name: str) -> None:
    service = services()[name]
    assert "image" in service or "build" in service, f"services.{name} has neither image nor build"
    built = build_of(service)
    if built:
        context, dockerfile = built
        assert context.is_dir(), f"services.{name}.build.context {context} does not exist"
        assert dockerfile.is_file(), f"services.{name}.build.dockerfile {dockerfile} does not exist"


def test_every_dockerfile_is_built_by_compose() -> None:
    used = {dockerfile.path.name for _, dockerfile in own_services().values()}
    missing = sorted(set(dockerfiles()) - used)
    assert not missing, f"no compose service builds {missing}"


def test_every_transcriber_variable_is_a_setting() -> None:
    sources = {COMPOSE_FILE: COMPOSE_FILE.read_text(encoding="utf-8")}
    sources |= {p: p.read_text(encoding="utf-8") for p in DOCKERFILES}
    if README.is_file():
        sources[README] = README.read_text(encoding="utf-8")
    bad = sorted(
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
        for path, text in sources.items()
        for match in SETTING_REFERENCE.finditer(text)
        if match.group(0) not in SETTING_NAMES
    )
    assert not bad, "not a field of transcriber.config.Settings:\n" + "\n".join(bad)


def test_compose_variables_with_transcriber_names_are_settings() -> None:
    names = {v for s in strings_in(compose()) for v in variables_in(s)}
    bad = sorted(n for n in names if n.startswith("TRANSCRIBER_") and n not in SETTING_NAMES)
    assert not bad, f"compose.yaml interpolates unknown settings: {bad}"


def test_shared_environment_is_an_anchor_every_own_service_uses() -> None:
    shared = compose().get("x-transcriber-env")
    assert isinstance(shared, dict), "compose.yaml needs an x-transcriber-env mapping"
    assert shared, "x-transcriber-env is empty"
    for name, (service, _) in own_services().items():
        env = service.get("environment")
        assert isinstance(env, dict), f"services.{name}.environment must merge x-transcriber-env"
        missing = sorted(set(shared) - set(env))
        assert not missing, f"services.{name}.environment lacks {missing} of x-transcriber-env"


@pytest.mark.parametrize("name", sorted(own_services()))
def test_settings_in_effect_are_valid(name: str) -> None:
    """Image ENV overlaid with the service's environment, at the defaults, is a valid
    Settings (a bad URL, bucket name or queue name fails here rather than on start-up)."""
    service, dockerfile = own_services()[name]
    env = {**dockerfile.env(), **environment_of(service)}
    values = {
        key.removeprefix("TRANSCRIBER_").lower(): value
        for key, value in env.items()
        if key.startswith("TRANSCRIBER_")
    }
    try:
        Settings.model_validate(values)  # these values alone: no environment, no .env file
    except ValueError as exc:
        pytest.fail(f"services.{name}: invalid settings in effect: {exc}")


def test_every_command_runs_a_real_entry_point() -> None:
    own = own_services()
    checked = 0
    for name, service in services().items():
        image = service.get("image")
        for where, argv in commands_of(name, service):
            check_command(argv, where, own_image=name in own, image=image)
            checked += 1
    assert checked >= len(own), "expected a command for every service of our images"


def test_depends_on_names_real_services_and_conditions() -> None:
    every = services()
    for name, service in every.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in every, f"services.{name}.depends_on names no service {target!r}"
            condition = (spec or {}).get("condition", "service_started")
            assert condition in DEPENDENCY_CONDITIONS, (
                f"services.{name}.depends_on.{target}: unknown condition {condition!r}"
            )
            if condition == "service_healthy":
                assert every[target].get("healthcheck"), (
                    f"services.{name} waits for {target} to be healthy, which has no healthcheck"
                )
            if condition == "service_completed_successfully":
                restart = str(every[target].get("restart", "no"))
                assert restart == "no", (
                    f"services.{name} waits for one-shot {target} to complete, but it restarts"
                    f" ({restart})"
                )
            assert not set(every[target].get("profiles", [])) - set(service.get("profiles", [])), (
                f"services.{name} depends on {target}, which only runs in a profile"
            )


@pytest.mark.parametrize("name", ["postgres", "redis", "s3"])
def test_backing_services_have_healthchecks(name: str) -> None:
    service = services().get(name)
    assert service is not None, f"compose.yaml has no {name} service"
    test = (service.get("healthcheck") or {}).get("test")
    assert test, f"services.{name} needs a healthcheck"
    assert test != ["NONE"], f"services.{name} disables its healthcheck"


def test_long_running_services_restart() -> None:
    for name, service in services().items():
        if service.get("restart", "no") == "no":
            continue
        assert service["restart"] in {"always", "unless-stopped"} or str(
            service["restart"]
        ).startswith("on-failure"), f"services.{name}: unknown restart policy"
    one_shots = {n for n, s in services().items() if s.get("restart", "no") == "no"}
    assert one_shots <= {"migrate", "setup"}, f"only one-shot jobs may stay down: {one_shots}"


def test_gpu_worker_requests_an_nvidia_gpu_in_its_profile() -> None:
    gpu = {n: s for n, (s, d) in own_services().items() if d.path.name == "Dockerfile.gpu"}
    assert gpu, "no service builds docker/Dockerfile.gpu"
    for name, service in gpu.items():
        assert "gpu" in service.get("profiles", []), f"services.{name} must be in profile gpu"
        devices = (
            service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        )
        assert devices, f"services.{name} reserves no device (deploy.resources.reservations)"
        assert any(
            d.get("driver") == "nvidia"
            and "gpu" in d.get("capabilities", [])
            and (d.get("count") == "all" or int(d.get("count", 0)) >= 1 or d.get("device_ids"))
            for d in devices
        ), f"services.{name} must reserve an nvidia device with capabilities [gpu]"


def test_flower_uses_the_same_broker() -> None:
    shared = {k: interpolate(str(v)) for k, v in compose()["x-transcriber-env"].items()}
    for name, service in services().items():
        env = environment_of(service)
        if "CELERY_BROKER_URL" in env:
            assert env["CELERY_BROKER_URL"] == shared["TRANSCRIBER_BROKER_URL"], (
                f"services.{name}.CELERY_BROKER_URL differs from TRANSCRIBER_BROKER_URL"
            )


def test_worker_concurrency_agrees_with_the_setting() -> None:
    """The worker divides CPU threads by TRANSCRIBER_WORKER_CONCURRENCY: a -c that differs
    would oversubscribe (or starve) the cores."""
    pairs: list[tuple[str, list[str], dict[str, str]]] = [
        (f"{path} CMD", exec_or_shell_form(cmd.arguments), d.env())
        for path, d in dockerfiles().items()
        if (cmd := d.final("CMD")) is not None
    ]
    for name, (service, dockerfile) in own_services().items():
        env = {**dockerfile.env(), **environment_of(service)}
        pairs += [(where, argv, env) for where, argv in commands_of(name, service)]
    for where, argv, env in pairs:
        if not is_worker(argv):
            continue
        processes = option_value(argv, "-c", "--concurrency")
        setting = env.get("TRANSCRIBER_WORKER_CONCURRENCY")
        if processes and setting:
            assert processes == setting, (
                f"{where}: -c {processes} but TRANSCRIBER_WORKER_CONCURRENCY={setting}"
            )


def test_the_published_queue_has_a_worker() -> None:
    """The watcher (and its sweeper) publish to TRANSCRIBER_QUEUE: a worker that runs
    without a profile must read it, and the GPU worker must read transcribe-gpu."""
    consumed: set[str] = set()
    gpu_queues: set[str] = set()
    publishers: dict[str, str] = {}
    for name, (service, dockerfile) in own_services().items():
        for _, argv in commands_of(name, service):
            if is_worker(argv) and not service.get("profiles"):
                consumed |= worker_queues(argv)
            if is_worker(argv) and dockerfile.path.name == "Dockerfile.gpu":
                gpu_queues |= worker_queues(argv)
            if argv[:2] == ["transcriber", "watch"]:
                env = {**dockerfile.env(), **environment_of(service)}
                publishers[name] = env.get("TRANSCRIBER_QUEUE", "transcribe")
    assert publishers, "no service runs `transcriber watch`"
    for name, queue in publishers.items():
        assert queue in consumed, f"services.{name} publishes to {queue!r}, which no worker reads"
    assert "transcribe-gpu" in gpu_queues, "the GPU worker must read the transcribe-gpu queue"


# --- Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_starts_from_a_tagged_image(path: Path) -> None:
    dockerfile = parse_dockerfile(path)
    keywords = [ins.keyword for ins in dockerfile.instructions]
    assert "FROM" in keywords, f"{path.name} has no FROM"
    first = next(ins for ins in dockerfile.instructions if ins.keyword != "ARG")
    assert first.keyword == "FROM", f"{path.name}:{first.line}: {first.keyword} before FROM"
    args = {
        k: v
        for ins in dockerfile.instructions[: keywords.index("FROM")]
        for k, _, v in [ins.arguments.partition("=")]
    }
    seen: list[str] = []
    for ins in dockerfile.instructions:
        if ins.keyword != "FROM":
            continue
        image = re.sub(r"\s+AS\s+\S+\s*$", "", ins.arguments, flags=re.I).split()[-1]
        image = interpolate(image, args)
        assert image in seen or re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image), (
            f"{path.name}:{ins.line}: FROM {image!r} is neither an earlier stage nor a tagged image"
        )
        seen += re.findall(r"\s+AS\s+(\S+)\s*$", ins.arguments, re.I)
    base = interpolate(
        next(i for i in dockerfile.instructions if i.keyword == "FROM").arguments.split()[0], args
    )
    if path.name == "Dockerfile.gpu":
        assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn(9)?-runtime-ubuntu[\d.]+", base), base
    else:
        assert base.startswith("python:3.11"), f"{path.name}: base {base!r} is not python:3.11"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist(path: Path) -> None:
    dockerfile = parse_dockerfile(path)
    contexts = {
        built[0]
        for service, d in own_services().values()
        if d.path == path and (built := build_of(service))
    }
    assert len(contexts) <= 1, f"{path.name} is built from several contexts: {contexts}"
    context = next(iter(contexts), ROOT)
    for ins in dockerfile.instructions:
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        argv = json.loads(ins.arguments) if ins.arguments.startswith("[") else ins.arguments.split()
        if any(a.startswith("--from") for a in argv):
            continue
        sources = [a for a in argv if not a.startswith("--")][:-1]
        assert sources, f"{path.name}:{ins.line}: {ins.keyword} without a source"
        for source in sources:
            if re.match(r"https?://", source):
                continue
            matches = list(context.glob(source)) if any(c in source for c in "*?[") else []
            assert matches or (context / source).exists(), (
                f"{path.name}:{ins.line}: {ins.keyword} source {source!r} is not in {context}"
            )
            assert not dockerignored(source), (
                f"{path.name}:{ins.line}: {source!r} is excluded by a .dockerignore"
            )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_a_real_entry_point_as_a_user(path: Path) -> None:
    dockerfile = parse_dockerfile(path)
    entrypoint, cmd = dockerfile.final("ENTRYPOINT"), dockerfile.final("CMD")
    assert cmd or entrypoint, f"{path.name} has neither CMD nor ENTRYPOINT"
    argv = [
        *(exec_or_shell_form(entrypoint.arguments) if entrypoint else []),
        *(exec_or_shell_form(cmd.arguments) if cmd else []),
    ]
    check_command(argv, f"{path.name} CMD", own_image=True, image=None)
    user = dockerfile.final("USER")
    assert user, f"{path.name}: the image must run as an unprivileged USER"
    assert user.arguments.split(":")[0] not in {"root", "0"}, f"{path.name}: USER is root"
    keys = set(dockerfile.env())
    assert "PYTHONUNBUFFERED" in keys, f"{path.name}: set PYTHONUNBUFFERED=1 (logs appear at once)"
    workdir = dockerfile.final("WORKDIR")
    assert workdir, f"{path.name}: no WORKDIR"
    assert workdir.arguments == "/app", f"{path.name}: WORKDIR must be /app"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_never_download_models(path: Path) -> None:
    """tiny.en ships in a package; a hub model name must fail at once, not download."""
    dockerfile = parse_dockerfile(path)
    assert dockerfile.env().get("HF_HUB_OFFLINE") == "1", f"{path.name}: set HF_HUB_OFFLINE=1"
    for ins in dockerfile.instructions:
        assert not re.search(r"download_model|huggingface-cli|hf download", ins.arguments), (
            f"{path.name}:{ins.line}: downloads a model at build time"
        )


def test_gpu_image_defaults_to_cuda_float16() -> None:
    env = dockerfiles()["Dockerfile.gpu"].env()
    assert env.get("TRANSCRIBER_DEVICE") == "cuda"
    assert env.get("TRANSCRIBER_COMPUTE_TYPE") == "float16"


def dockerignored(source: str) -> bool:
    """Whether the build context's .dockerignore (or BuildKit's per-Dockerfile
    <Dockerfile>.dockerignore) excludes ``source``; the last matching pattern wins."""
    excluded = False
    for ignore in [ROOT / ".dockerignore", *DOCKER.glob("*.dockerignore")]:
        if not ignore.is_file():
            continue
        for raw in ignore.read_text(encoding="utf-8").splitlines():
            pattern = raw.strip()
            if not pattern or pattern.startswith("#"):
                continue
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            parts = Path(source.strip("/")).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(
                fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, f"**/{pattern}") for p in prefixes
            ):
                excluded = not negate
    return excluded


# --- docker/README.md -------------------------------------------------------------------------


def readme_commands() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) of each `transcriber …` and `celery …` command in the README's shell
    blocks, also where one follows `docker compose … exec|run SERVICE`."""
    in_block = False
    pending = ""
    for number, raw in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if raw.startswith("```"):
            in_block = not in_block and raw.strip() in {"```sh", "```bash", "```shell"}
            continue
        if not in_block or raw.lstrip().startswith("#"):
            continue
        line = pending + raw.split(" #", 1)[0]
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        for argv in shell_commands(line):
            yield from ((f"docker/README.md:{number}", c) for c in _project_commands(argv))


def _project_commands(argv: list[str]) -> Iterator[list[str]]:
    if argv[0] in {"transcriber", "celery"}:
        yield argv
        return
    if not (argv[0] == "podman-compose" or argv[:2] == ["docker", "compose"]):
        return
    verbs = [i for i, token in enumerate(argv) if token in {"exec", "run"}]
    if not verbs:
        return
    rest = argv[verbs[0] + 1 :]
    while rest and rest[0].startswith("-"):
        rest = rest[1:]  # flags only (--rm, -T): the README keeps options with values out
    if rest and rest[0] not in services():
        pytest.fail(f"docker/README.md: `{shlex.join(argv)}` names no service {rest[0]!r}")
    if rest[1:2] and rest[1] in {"transcriber", "celery"}:
        yield rest[1:]


def test_readme_commands_are_real() -> None:
    assert README.is_file(), "docker/README.md is missing"
    for where, argv in readme_commands():
        check_command(argv, where, own_image=False, image=None)
