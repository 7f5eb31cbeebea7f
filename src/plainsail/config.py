"""Load plainsail.yml strictly: every problem is reported with its key path and file line.

The whole file is validated up front; unknown keys, wrong types, a tag or digest inside
`image` and unset `${VAR}` references are all errors. Values may use `${VAR}` (required)
or `${VAR:-default}` (optional), read from the deployer's environment; `$${` is a literal
`${`. Secret values are wrapped in `Secret` and print as `***`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plainsail.durations import parse_duration
from plainsail.errors import ConfigError
from plainsail.secret import Secret

DEFAULT_FILE = "plainsail.yml"
SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR_RE = re.compile(r"\$\$\{|\$\{([^}:]*)(?::-([^}]*))?\}")
# A repository: optional registry host[:port], then lowercase path components.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(
    rf"(?:(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
)


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: Secret


@dataclass(frozen=True)
class BuildConfig:
    context: str = "."
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = field(default_factory=dict)
    tag_length: int = 8
    source: str | None = None


@dataclass(frozen=True)
class SigningConfig:
    key: str | None = None
    public_key: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class SSHConfig:
    identity_file: str | None = None
    known_hosts: str | None = None
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AppConfig:
    port: int = 8080
    publish: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    network: str = "bridge"
    volumes: list[str] = field(default_factory=list)
    init: bool = True
    stop_timeout: float = 10.0
    command: list[str] | None = None


@dataclass(frozen=True)
class MigrateConfig:
    command: list[str]
    timeout: float = 300.0


@dataclass(frozen=True)
class HealthConfig:
    path: str = "/health"
    status: int = 200
    body_contains: str | None = None
    attempts: int = 30
    interval: float = 1.0
    timeout: float = 2.0


@dataclass(frozen=True)
class NotifyTarget:
    webhook: Secret


@dataclass(frozen=True)
class Config:
    service: str
    image: str
    path: Path = Path(DEFAULT_FILE)
    registry: RegistryAuth | None = None
    build: BuildConfig = field(default_factory=BuildConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    hosts: list[str] = field(default_factory=lambda: ["local"])
    ssh: SSHConfig = field(default_factory=SSHConfig)
    host_dir: str = "~/.plainsail"
    app: AppConfig = field(default_factory=AppConfig)
    migrate: MigrateConfig | None = None
    health: HealthConfig = field(default_factory=HealthConfig)
    on_failure: str = "restore"
    retain: int = 3
    notify: list[NotifyTarget] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The folder holding plainsail.yml; relative paths in the config start here."""
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.root / os.path.expanduser(relative)).resolve()

    @property
    def registry_host(self) -> str:
        return registry_host_of(self.image)

    def secrets(self) -> list[Secret]:
        """Every secret value this config can reach, for redacting output."""
        found: list[Secret] = []
        if self.registry:
            found.append(self.registry.password)
        found.extend(t.webhook for t in self.notify)
        return [s for s in found if s]


def registry_host_of(image: str) -> str:
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def check_repository(image: str) -> str | None:
    """Return a problem with an image repository reference, or None if it is fine."""
    if "@" in image:
        return (
            f"{image!r} contains a digest; give the repository only "
            "(plainsail pins digests itself)"
        )
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        return (
            f"{image!r} contains a tag; give the repository only: plainsail tags every "
            "image with its git SHA, so a deploy always names one immutable build"
        )
    if not _REPO_RE.fullmatch(image):
        return (
            f"{image!r} is not a valid image repository; use lowercase letters, digits "
            "and . _ - separators, e.g. registry.example.com/team/service"
        )
    return None


# ---------------------------------------------------------------- validation machinery


class _Ctx:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def error(self, node: yaml.Node | None, path: str, msg: str) -> None:
        where = f"line {node.start_mark.line + 1}: " if node is not None else ""
        self.problems.append(f"{where}{path or '(top level)'}: {msg}")

    def interpolate(self, node: yaml.ScalarNode, path: str) -> str | None:
        text = str(node.value)
        failed = False

        def sub(m: re.Match[str]) -> str:
            nonlocal failed
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            if not ENV_NAME_RE.fullmatch(name or ""):
                self.error(node, path, f"${{{name}}} is not a valid variable name")
                failed = True
                return ""
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.error(
                node,
                path,
                f"environment variable {name} is not set; export it, or write "
                f"${{{name}:-default}} to make it optional",
            )
            failed = True
            return ""

        out = _VAR_RE.sub(sub, text)
        return None if failed else out


Conv = Callable[[_Ctx, yaml.Node, str], Any]
_MISSING = object()


def _scalar(ctx: _Ctx, node: yaml.Node, path: str, what: str) -> str | None:
    if not isinstance(node, yaml.ScalarNode):
        ctx.error(node, path, f"expected {what}, got a {_kind(node)}")
        return None
    if node.tag == "tag:yaml.org,2002:null" and node.style is None:
        return None
    return ctx.interpolate(node, path)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "value"


def string(
    pattern: re.Pattern[str] | None = None, hint: str = "", optional: bool = True
) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "a string")
        if value is None:
            if isinstance(node, yaml.ScalarNode) and not optional:
                ctx.error(node, path, "a value is required")
            return None if optional else _MISSING
        if pattern is not None and not pattern.fullmatch(value):
            ctx.error(node, path, f"{value!r} is not valid: {hint}")
            return _MISSING
        return value

    return conv


def secret_string(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "a string")
    return Secret(value or "")


def integer(lo: int | None = None, hi: int | None = None) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "a whole number")
        if value is None:
            return None
        try:
            n = int(value)
        except ValueError:
            ctx.error(node, path, f"expected a whole number, got {value!r}")
            return _MISSING
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            ctx.error(node, path, f"{n} is out of range: must be {bounds}")
            return _MISSING
        return n

    return conv


def boolean(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "true or false")
    if value is None:
        return None
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    ctx.error(node, path, f"expected true or false, got {value!r}")
    return _MISSING


def duration(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "a duration")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        ctx.error(node, path, str(exc))
        return _MISSING


def choice(*options: str) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "one of " + ", ".join(options))
        if value is None:
            return None
        if value not in options:
            ctx.error(node, path, f"{value!r} is not one of: {', '.join(options)}")
            return _MISSING
        return value

    return conv


def list_of(item: Conv, min_items: int = 0) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            ctx.error(node, path, f"expected a list, got a {_kind(node)}")
            return _MISSING
        out = [item(ctx, child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        if len(out) < min_items:
            ctx.error(node, path, f"needs at least {min_items} item(s)")
        return [v for v in out if v is not _MISSING and v is not None]

    return conv


def command(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """A command as a list of arguments (a plain string is split like a shell would)."""
    if isinstance(node, yaml.SequenceNode):
        args = list_of(string(optional=False))(ctx, node, path)
        if not args:
            ctx.error(node, path, "the command is empty")
            return _MISSING
        return args
    value = _scalar(ctx, node, path, "a command (a list of arguments)")
    if value is None:
        return None
    import shlex

    try:
        args = shlex.split(value)
    except ValueError as exc:
        ctx.error(node, path, f"cannot split the command: {exc}; write it as a list")
        return _MISSING
    return args or _MISSING


def str_map(key_re: re.Pattern[str] | None = None, key_hint: str = "") -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            ctx.error(node, path, f"expected a mapping, got a {_kind(node)}")
            return _MISSING
        out: dict[str, str] = {}
        for knode, vnode in node.value:
            key = str(knode.value)
            kpath = f"{path}.{key}"
            if key_re is not None and not key_re.fullmatch(key):
                ctx.error(knode, kpath, f"invalid name: {key_hint}")
                continue
            value = _scalar(ctx, vnode, kpath, "a string")
            out[key] = "" if value is None else value
        return out

    return conv


def obj(
    cls: type, fields: dict[str, Conv], required: tuple[str, ...] = ()
) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            if required:
                ctx.error(node, path, f"needs {', '.join(required)}")
                return _MISSING
            return cls()
        if not isinstance(node, yaml.MappingNode):
            ctx.error(node, path, f"expected a mapping, got a {_kind(node)}")
            return _MISSING
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for knode, vnode in node.value:
            key = str(knode.value)
            kpath = f"{path}.{key}" if path else key
            if key in seen:
                ctx.error(knode, kpath, "duplicate key")
                continue
            seen.add(key)
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                ctx.error(knode, kpath, f"unknown key{hint}; known keys: {', '.join(fields)}")
                continue
            value = fields[key](ctx, vnode, kpath)
            if value is not None and value is not _MISSING:
                values[key] = value
            elif value is _MISSING:
                values[key] = _MISSING
        for key in required:
            if key not in values:
                ctx.error(node, f"{path}.{key}" if path else key, "is required")
        if any(v is _MISSING for v in values.values()) or ctx.problems:
            return _MISSING
        return cls(**values)

    return conv


def _host(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    from plainsail.hosts import parse_host

    value = string(optional=False)(ctx, node, path)
    if not isinstance(value, str):
        return value
    try:
        parse_host(value)
    except ValueError as exc:
        ctx.error(node, path, str(exc))
        return _MISSING
    return value


def _image(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(optional=False)(ctx, node, path)
    if not isinstance(value, str):
        return value
    problem = check_repository(value)
    if problem:
        ctx.error(node, path, problem)
        return _MISSING
    return value


def _volume(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(optional=False)(ctx, node, path)
    if isinstance(value, str) and (value.count(":") not in (1, 2) or value.startswith(":")):
        ctx.error(node, path, f"{value!r} is not SOURCE:TARGET[:OPTIONS] (e.g. data:/var/lib/app)")
        return _MISSING
    return value


def _network(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    return string(re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*"), "a Docker network name")(
        ctx, node, path
    )


_SCHEMA = obj(
    Config,
    {
        "service": string(SERVICE_RE, "lowercase letters, digits and -, starting with a letter "
                          "or digit", optional=False),
        "image": _image,
        "registry": obj(RegistryAuth, {"username": string(), "password": secret_string}),
        "build": obj(
            BuildConfig,
            {
                "context": string(),
                "dockerfile": string(),
                "args": str_map(re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "a build argument name"),
                "tag_length": integer(7, 40),
                "source": string(),
            },
        ),
        "signing": obj(
            SigningConfig, {"key": string(), "public_key": string(), "verify": boolean}
        ),
        "hosts": list_of(_host, min_items=1),
        "ssh": obj(
            SSHConfig,
            {"identity_file": string(), "known_hosts": string(), "options": str_map(
                re.compile(r"[A-Za-z][A-Za-z0-9]*"), "an OpenSSH option name such as ProxyJump")},
        ),
        "host_dir": string(),
        "app": obj(
            AppConfig,
            {
                "port": integer(1, 65535),
                "publish": integer(1, 65535),
                "env": str_map(ENV_NAME_RE, "an environment variable name"),
                "secrets": list_of(string(ENV_NAME_RE, "an environment variable name",
                                          optional=False)),
                "network": _network,
                "volumes": list_of(_volume),
                "init": boolean,
                "stop_timeout": duration,
                "command": command,
            },
        ),
        "migrate": obj(MigrateConfig, {"command": command, "timeout": duration}, ("command",)),
        "health": obj(
            HealthConfig,
            {
                "path": string(re.compile(r"/\S*"), "a URL path starting with /"),
                "status": integer(100, 599),
                "body_contains": string(),
                "attempts": integer(1, 10000),
                "interval": duration,
                "timeout": duration,
            },
        ),
        "on_failure": choice("restore", "stop"),
        "retain": integer(0, 100),
        "notify": list_of(obj(NotifyTarget, {"webhook": secret_string}, ("webhook",))),
    },
    ("service", "image"),
)


def _cross_checks(cfg: Config, ctx: _Ctx, lines: dict[str, int]) -> None:
    def err(path: str, msg: str) -> None:
        line = lines.get(path)
        ctx.problems.append(f"{'line ' + str(line) + ': ' if line else ''}{path}: {msg}")

    overlap = set(cfg.app.env) & set(cfg.app.secrets)
    for name in sorted(overlap):
        err("app.secrets", f"{name} is both in app.env and app.secrets; keep it in one place")
    if cfg.app.network == "host" and cfg.app.publish not in (None, cfg.app.port):
        err("app.publish", "with network: host the app's own port is used; remove publish "
            "or make it equal to app.port")
    if len(set(cfg.hosts)) != len(cfg.hosts):
        err("hosts", "a host is listed twice")


def _top_lines(root: yaml.Node) -> dict[str, int]:
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[p] = k.start_mark.line + 1
                walk(v, p)

    walk(root, "")
    return lines


def parse(text: str, path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Validate the YAML text of a config; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    name = str(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}not valid YAML: {problem}", name) from None
    if root is None:
        raise ConfigError("the file is empty; see the example in the README", name)
    ctx = _Ctx(env)
    result = _SCHEMA(ctx, root, "")
    if ctx.problems or result is _MISSING:
        raise ConfigError(ctx.problems or ["invalid configuration"], name)
    cfg: Config = result
    object.__setattr__(cfg, "path", path)
    _cross_checks(cfg, ctx, _top_lines(root))
    if ctx.problems:
        raise ConfigError(ctx.problems, name)
    return cfg


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read and validate a config file (default: ./plainsail.yml)."""
    p = Path(path or DEFAULT_FILE)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "not found; run plainsail in the folder holding plainsail.yml or pass "
            "--config PATH",
            str(p),
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror}", str(p)) from None
    return parse(text, p.absolute(), env)


def to_display(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data with every secret shown as `***`."""
    from dataclasses import fields, is_dataclass

    def conv(value: Any) -> Any:
        if isinstance(value, Secret):
            return str(value)
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: conv(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, dict):
            return {k: conv(v) for k, v in value.items()}
        if isinstance(value, list):
            return [conv(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    data: dict[str, Any] = conv(cfg)
    data.pop("path", None)
    return data
