"""Load plainsail.yml strictly: every problem is reported with its key path and file line.

The whole file is validated up front; unknown keys, wrong types, a tag or digest inside
`image`, unset `${VAR}` references and values that cannot work at deploy time (an unusable
health path or webhook URL, a duration too long to wait for, a line break in a setting that
must be one line) are all errors. YAML anchors and aliases, and nesting deeper than any
config needs, are refused before the document is walked. Values may use `${VAR}` (required)
or `${VAR:-default}` (optional), read from the deployer's environment; `$${` is a literal
`${`. Secret values are wrapped in `Secret` and print as `***`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from plainsail.config.durations import check_bounds, parse_duration
from plainsail.config.secretsources import (
    CommandSource,
    EnvSource,
    FileSource,
    Source,
    SourcedSecret,
    VaultSource,
)
from plainsail.errors import ConfigError
from plainsail.inputs import YamlRefused, compose_yaml
from plainsail.secret import Secret

DEFAULT_FILE = "plainsail.yml"
MAX_FILE_BYTES = 1024 * 1024  # a plainsail.yml is a few kilobytes
MAX_DEPTH = 50  # a valid config nests 4 levels; refuse anything far deeper before walking it
# The migration folder layouts (plainsail.migrations.layouts.LAYOUTS; a test keeps them equal).
MIGRATION_LAYOUTS = ("flat", "diesel", "prisma", "golang-migrate", "dbmate", "flyway")
SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # part of container names and paths
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR_RE = re.compile(r"\$\$\{|\$\{([^}:]*)(?::-([^}]*))?\}")
# A repository: optional registry host[:port], then lowercase path components.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY_RE = re.compile(
    rf"(?:(?P<name>{_LABEL}(?:\.{_LABEL})*)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]{{1,5}}))?"
)
# A URL path as http.client sends it: RFC 3986 characters (percent-encoded where needed),
# an optional query string, no fragment.
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
_URL_PATH_RE = re.compile(rf"/(?:{_PCHAR}|/)*(?:\?(?:{_PCHAR}|[/?])*)?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Upper bounds of durations (seconds): long enough for any real use, short enough that
# every wait, socket timeout and `docker --stop-timeout` can take them.
HOUR = 3600.0
MAX_HEALTH_INTERVAL = HOUR
MAX_HEALTH_TIMEOUT = HOUR
MAX_STOP_TIMEOUT = HOUR
MAX_MIGRATE_TIMEOUT = 24 * HOUR
MAX_COMMAND_TIMEOUT = HOUR
MAX_PULL_TIMEOUT = 24 * HOUR
MAX_TRAFFIC_WINDOW = HOUR


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class RegistryAuth:
    """The `registry` block: credentials for the registry named in `image` (mode
    `registry`), or `mode: host`: no registry of yours; plainsail runs one on loopback on
    the deployer and one on each host (port `port`, from `image` when the host has no
    docker-registry binary) and copies the image over SSH."""

    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    insecure: bool = False
    mode: str = "registry"
    port: int = 5000
    image: str | None = None

    @property
    def host_mode(self) -> bool:
        return self.mode == "host"


@dataclass(frozen=True)
class BuildConfig:
    context: str = "."
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = field(default_factory=dict)
    tag_length: int = 8
    source: str | None = None


@dataclass(frozen=True)
class KeylessConfig:
    issuer: str
    trusted_root: str
    identity: str | None = None
    identity_regexp: str | None = None


@dataclass(frozen=True)
class SigningConfig:
    key: str | None = None
    public_key: str | None = None
    verify: bool = True
    repositories: list[str] = field(default_factory=list)
    keyless: KeylessConfig | None = None
    format: str = "classic"  # what `sign` writes: "classic" (.sig tag) or "bundle"


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
    # name -> where its value comes from; the list form means {NAME: {env: NAME}}
    secrets: dict[str, Source] = field(default_factory=dict)
    network: str = "bridge"
    volumes: list[str] = field(default_factory=list)
    init: bool = True
    stop_timeout: float = 10.0
    command: list[str] | None = None
    add_hosts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MigrateConfig:
    command: list[str]
    timeout: float = 300.0
    layout: str = "auto"
    schema: str = "public"  # PostgreSQL schema of plainsail migrate's ledger


@dataclass(frozen=True)
class TimeoutsConfig:
    """How long a command on a host may run before the deploy gives up on it: `pull` for
    `docker pull`, `command` for every other one (`docker stop` gets `app.stop_timeout`
    more; migrations have `migrate.timeout`)."""

    command: float = 120.0
    pull: float = 900.0

    @property
    def query(self) -> float:
        """For quick queries (the survey, `docker inspect`, listing containers)."""
        return min(30.0, self.command)


@dataclass(frozen=True)
class HealthConfig:
    path: str = "/health"
    status: int = 200
    body_contains: str | None = None
    attempts: int = 30
    interval: float = 1.0
    timeout: float = 2.0


@dataclass(frozen=True)
class ProxyTLS:
    """How the proxy serves a service: `auto` (ACME), `internal` (Caddy's local CA), `off`,
    or `files` (the deployer's certificate and key, paths relative to plainsail.yml)."""

    mode: str = "auto"
    cert: str | None = None
    key: str | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True)
class ProxyACME:
    """The ACME CA for `tls: auto` when it is not Let's Encrypt: its directory URL, the CA
    certificate its HTTPS endpoint chains to (a file relative to plainsail.yml, for a
    private CA such as step-ca), and the account e-mail."""

    directory: str = ""
    ca_root: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class ProxyConfig:
    hosts: list[str] = field(default_factory=list)
    image: str = ""
    path: str = "/"
    tls: ProxyTLS = field(default_factory=ProxyTLS)
    http_port: int = 80
    https_port: int = 443
    drain: float = 30.0
    network: str = "plainsail"
    nested: bool = False  # the path may lie under another service's shorter prefix
    acme: ProxyACME | None = None  # tls: auto from this CA (default: Let's Encrypt)


@dataclass(frozen=True)
class RolloutConfig:
    """How a deploy switches several hosts: the first `canary` hosts alone, then batches of
    `batch` hosts (a number, or a share of the hosts such as "25%"), `pause` seconds between
    batches; at most `max_parallel` hosts are worked on at once (preflight, pulls, switches).
    `on_failure` (restore or stop) is what a failed switch leaves; the top-level
    `on_failure` of older configs sets it too (`Config.on_failure` is the one in force)."""

    batch: str = "100%"
    pause: float = 0.0
    canary: int = 0
    max_parallel: int = 10
    on_failure: str = ""  # "" until resolved: then restore or stop

    def batches(self, count: int) -> list[int]:
        """The sizes of the batches `count` hosts switch in, in order."""
        if count <= 0:
            return []
        sizes = [1] * min(self.canary, count)
        left = count - len(sizes)
        if self.batch.endswith("%"):
            size = max(1, -(-count * int(self.batch[:-1]) // 100))  # a share of all hosts
        else:
            size = int(self.batch)
        while left > 0:
            sizes.append(min(size, left))
            left -= sizes[-1]
        return sizes


@dataclass(frozen=True)
class BackupConfig:
    """A backup of the app's database (the DATABASE_URL secret) before migrations:
    `before` says when, `keep` how many stay on the host, `image` is the PostgreSQL client
    image (pinned by digest) whose pg_dump takes it."""

    image: str = ""
    before: str = "migrations"  # migrations | destructive | never
    keep: int = 7
    timeout: float = 3600.0


@dataclass(frozen=True)
class SwarmUpdate:
    """How Swarm replaces tasks: `parallelism` at a time (0: all at once), `delay` between
    batches, `order` start-first (new task up before the old one stops) or stop-first."""

    parallelism: int = 1
    delay: float = 0.0
    order: str = "start-first"


@dataclass(frozen=True)
class SwarmResources:
    """Per task: `cpus` (a number of CPUs, e.g. 0.5) and `memory` (bytes; written 256M, 1G)."""

    cpus: float | None = None
    memory: int | None = None


@dataclass(frozen=True)
class SwarmResourceSet:
    """`limits` caps each task; `reservations` is what the scheduler sets aside for it."""

    limits: SwarmResources = field(default_factory=SwarmResources)
    reservations: SwarmResources = field(default_factory=SwarmResources)


@dataclass(frozen=True)
class SwarmConfig:
    """The `swarm` block (`target: swarm`): the manager plainsail reaches the cluster
    through (one of `hosts`), and the service's replicas, placement, update and resources."""

    manager: str
    replicas: int = 1
    placement: list[str] = field(default_factory=list)
    update: SwarmUpdate = field(default_factory=SwarmUpdate)
    resources: SwarmResourceSet = field(default_factory=SwarmResourceSet)
    # Swarm's own health check of each task, asking what `health.*` asks (false: none set
    # by plainsail; an image's HEALTHCHECK is kept either way).
    healthcheck: bool = True


# With target swarm the default app.network becomes this overlay network (plainsail creates it).
SWARM_NETWORK = "plainsail"


@dataclass(frozen=True)
class LatencyLimit:
    """traffic_gate.max_latency_p95: a ratio to the old version's p95 (`2x`) or an absolute
    duration (`800ms`); exactly one is set."""

    ratio: float | None = 2.0
    seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.ratio:g}x" if self.ratio is not None else f"{self.seconds:g}s"


@dataclass(frozen=True)
class TrafficGateConfig:
    """The release gate on real traffic (behind the proxy only): the new version is
    watched for `window` after it gets traffic (`canary`: a share of it first) and routed
    back when its answers are worse than the old version's by more than the limits."""

    window: float = 60.0
    canary: float | None = None  # percent of requests sent to the new version first
    max_error_rate: float = 2.0  # percentage points of 5xx above the old version's rate
    max_latency_p95: LatencyLimit = field(default_factory=LatencyLimit)
    latency_floor: float = 0.05
    min_requests: int = 50


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
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    on_failure: str = "restore"
    retain: int = 3
    notify: list[NotifyTarget] = field(default_factory=list)
    proxy: ProxyConfig | None = None
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    backup: BackupConfig | None = None
    target: str = "hosts"
    swarm: SwarmConfig | None = None

    @property
    def swarm_network(self) -> str:
        """The overlay network of a swarm service: app.network, unless it is the default."""
        return SWARM_NETWORK if self.app.network in ("bridge", "default") else self.app.network
    traffic_gate: TrafficGateConfig | None = None

    @property
    def root(self) -> Path:
        """The folder holding plainsail.yml; relative paths in the config start here."""
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.root / os.path.expanduser(relative)).resolve()

    @property
    def registry_host(self) -> str:
        return registry_host_of(self.image)

    @property
    def host_mode(self) -> bool:
        """`registry: {mode: host}`: no registry of yours, images travel over SSH."""
        return self.registry is not None and self.registry.host_mode

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
    if len(image) > 255:
        return f"{_show(image)} is too long for an image repository (at most 255 characters)"
    first, sep, rest = image.partition("/")
    path = image
    if sep and registry_host_of(image) == first:
        problem = _registry_host_problem(first)
        if problem:
            return f"{_show(image)}: {problem}"
        path = rest
    if not _PATH_RE.fullmatch(path):
        return (
            f"{_show(image)} is not a valid image repository; use lowercase letters, digits "
            "and . _ - separators, e.g. registry.example.com/team/service"
        )
    return None


def _registry_host_problem(host: str) -> str | None:
    m = _REGISTRY_RE.fullmatch(host)
    if m is None:
        return (
            f"the registry host {_show(host)} is not a host name: write letters, digits and "
            "-, in parts separated by single dots, then an optional :PORT (or [IPv6]:PORT)"
        )
    if m["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(m["ipv6"])
        except ValueError:
            return f"the registry host {_show(host)} is not a valid IPv6 address"
    if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
        return f"the registry port {m['port']} is not between 1 and 65535"
    return None


def _show(text: str, limit: int = 60) -> str:
    """A value for an error message: quoted, and cut short when long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------- validation machinery


class _Ctx:
    def __init__(self, env: Mapping[str, str], base: Path = Path(".")) -> None:
        self.env = env
        self.base = base  # the folder of plainsail.yml: relative paths start there
        self.problems: list[str] = []
        self.swarm = False  # the file says target: swarm (what some checks depend on)

    def error(self, node: yaml.Node | None, path: str, msg: str) -> None:
        where = f"line {node.start_mark.line + 1}: " if node is not None else ""
        self.problems.append(_one_line(f"{where}{path or '(top level)'}: {msg}"))

    def interpolate(self, node: yaml.ScalarNode, path: str) -> str | None:
        text = str(node.value)
        failed = False

        def sub(m: re.Match[str]) -> str:
            nonlocal failed
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            if not ENV_NAME_RE.fullmatch(name or ""):
                shown = name if len(name) <= 40 else name[:40] + "..."
                self.error(node, path, f"${{{shown}}} is not a valid variable name")
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


def _one_line(text: str) -> str:
    """Show control characters (line breaks above all) escaped, so a problem is one line."""
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


Conv = Callable[[_Ctx, yaml.Node, str], Any]
_MISSING: Any = object()
ONE_LINE = "must be one line (it contains a line break)"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _key(ctx: _Ctx, knode: yaml.Node, path: str) -> str | None:
    """The text of a mapping key, or None (reported) when it is not a plain value."""
    if not isinstance(knode, yaml.ScalarNode):
        ctx.error(knode, path, f"a key must be a plain name, not a {_kind(knode)}")
        return None
    return str(knode.value)


def _dotted(path: str, key: str) -> str:
    shown = key if len(key) <= 60 else key[:60] + "..."
    return f"{path}.{shown}" if path else shown


def _scalar(
    ctx: _Ctx, node: yaml.Node, path: str, what: str, lines: str | None = ONE_LINE
) -> Any:
    """The interpolated text of a scalar; None for null; _MISSING (reported) when unusable.

    No value may hold a NUL character; unless `lines` is None, none may hold a line
    break either (`lines` says why not).
    """
    if not isinstance(node, yaml.ScalarNode):
        ctx.error(node, path, f"expected {what}, got a {_kind(node)}")
        return _MISSING
    if node.tag == "tag:yaml.org,2002:null" and node.style is None:
        return None
    value = ctx.interpolate(node, path)
    if value is None:
        return _MISSING
    if "\x00" in value:
        ctx.error(node, path, "contains a NUL character, which no setting can carry")
        return _MISSING
    if not _is_utf8(value):
        ctx.error(node, path, "contains bytes that are not UTF-8 text (from an environment "
                  "variable?)")
        return _MISSING
    if lines is not None and any(c in value for c in "\n\r\x85\u2028\u2029"):
        ctx.error(node, path, lines)
        return _MISSING
    return value


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "value"


def string(
    pattern: re.Pattern[str] | None = None,
    hint: str = "",
    optional: bool = True,
    *,
    multiline: bool = False,
    nonempty: bool = False,
) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "a string", None if multiline else ONE_LINE)
        if value is _MISSING:
            return _MISSING
        if value is None:
            if not optional:
                ctx.error(node, path, "a value is required")
            return None if optional else _MISSING
        if nonempty and not value:
            ctx.error(node, path, "must not be empty")
            return _MISSING
        if pattern is not None and not pattern.fullmatch(value):
            ctx.error(node, path, f"{_show(value)} is not valid: {hint}")
            return _MISSING
        return value

    return conv


def secret_string(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "a string")
    if value is _MISSING:
        return _MISSING
    return Secret(value or "")


def integer(lo: int | None = None, hi: int | None = None) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "a whole number")
        if value is None or value is _MISSING:
            return value
        try:
            if len(value) > 40:
                raise ValueError
            n = int(value)
        except ValueError:
            ctx.error(node, path, f"expected a whole number, got {_show(value)}")
            return _MISSING
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            ctx.error(node, path, f"{n} is out of range: must be {bounds}")
            return _MISSING
        return n

    return conv


def boolean(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "true or false")
    if value is None or value is _MISSING:
        return value
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    ctx.error(node, path, f"expected true or false, got {_show(value)}")
    return _MISSING


def duration(most: float, zero_ok: bool = False) -> Conv:
    """A duration in seconds: finite, not negative, at most `most` (and not 0 unless
    `zero_ok`), so every wait and timeout built from it can take it."""

    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "a duration")
        if value is None or value is _MISSING:
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            ctx.error(node, path, str(exc))
            return _MISSING
        problem = check_bounds(seconds, most=most, zero_ok=zero_ok)
        if problem:
            ctx.error(node, path, problem)
            return _MISSING
        return seconds

    return conv


def choice(*options: str) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "one of " + ", ".join(options))
        if value is None or value is _MISSING:
            return value
        if value not in options:
            ctx.error(node, path, f"{_show(value)} is not one of: {', '.join(options)}")
            return _MISSING
        return value

    return conv


def list_of(item: Conv, min_items: int = 0, unique: bool = False) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        if _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            ctx.error(node, path, f"expected a list, got a {_kind(node)}")
            return _MISSING
        out = [item(ctx, child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        if len(out) < min_items:
            ctx.error(node, path, f"needs at least {min_items} item(s)")
        if any(v is _MISSING for v in out):
            return _MISSING
        kept = [v for v in out if v is not None]
        if unique:
            for i, v in enumerate(kept):
                if v in kept[:i]:
                    ctx.error(node.value[i], f"{path}[{i}]", f"{_show(str(v))} is listed twice")
        return kept

    return conv


def command(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """A command as a list of arguments (a plain string is split like a shell would)."""
    if isinstance(node, yaml.SequenceNode):
        args = list_of(string(optional=False, multiline=True))(ctx, node, path)
        if args is _MISSING:
            return _MISSING
        if not args:
            ctx.error(node, path, "the command is empty; give a program and its arguments, "
                      "or remove the key")
            return _MISSING
        if not args[0].strip():
            ctx.error(node, f"{path}[0]", "the program name is empty")
            return _MISSING
        return args
    value = _scalar(ctx, node, path, "a command (a list of arguments)", lines=None)
    if value is None or value is _MISSING:
        return value
    import shlex

    try:
        args = shlex.split(value)
    except ValueError as exc:
        ctx.error(node, path, f"cannot split the command: {exc}; write it as a list")
        return _MISSING
    if not args:
        ctx.error(node, path, "the command is empty; give a program and its arguments, "
                  "or remove the key")
        return _MISSING
    return args


def str_map(
    key_re: re.Pattern[str] | None = None,
    key_hint: str = "",
    *,
    lines: str | None = ONE_LINE,
    nonempty: bool = False,
) -> Conv:
    """A mapping of names to strings; null values are empty strings unless `nonempty`."""

    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        if _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            ctx.error(node, path, f"expected a mapping, got a {_kind(node)}")
            return _MISSING
        out: dict[str, str] = {}
        failed = False
        for knode, vnode in node.value:
            key = _key(ctx, knode, path)
            if key is None:
                failed = True
                continue
            kpath = _dotted(path, key)
            if key in out:
                ctx.error(knode, kpath, "duplicate key")
                failed = True
                continue
            if key_re is not None and not key_re.fullmatch(key):
                ctx.error(knode, kpath, f"invalid name: {key_hint}")
                failed = True
                continue
            value = _scalar(ctx, vnode, kpath, "a string", lines)
            if value is _MISSING:
                failed = True
                continue
            if nonempty and not value:
                ctx.error(vnode, kpath, "needs a value")
                failed = True
                continue
            out[key] = "" if value is None else value
        return _MISSING if failed else out

    return conv


def obj(
    cls: type, fields: dict[str, Conv], required: tuple[str, ...] = ()
) -> Conv:
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        if _is_null(node):
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
            key = _key(ctx, knode, path)
            if key is None:
                continue
            kpath = _dotted(path, key)
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
    from plainsail.hosts.addresses import parse_host

    value = string(optional=False)(ctx, node, path)
    if not isinstance(value, str):
        return value
    try:
        parse_host(value)
    except ValueError as exc:
        ctx.error(node, path, str(exc))
        return _MISSING
    return value.strip()


def _hosts(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    if _is_null(node) or (isinstance(node, yaml.SequenceNode) and not node.value):
        ctx.error(node, path, "needs at least one host, e.g. [local] or ssh://deploy@web-1")
        return _MISSING
    return list_of(_host)(ctx, node, path)


def _host_dir(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(nonempty=True)(ctx, node, path)
    if isinstance(value, str) and not (
        value.startswith("/") or value == "~" or value.startswith("~/")
    ):
        ctx.error(node, path, f"{_show(value)} is not an absolute path; write e.g. "
                  "~/.plainsail or /srv/plainsail")
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


_VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")
_VOLUME_OPTIONS = {"ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave",
                   "private", "rprivate", "consistent", "cached", "delegated"}


def _volume(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(optional=False)(ctx, node, path)
    if not isinstance(value, str):
        return value
    parts = value.split(":")
    if len(parts) not in (2, 3):
        ctx.error(node, path, f"{_show(value)} is not SOURCE:TARGET[:OPTIONS] "
                  "(e.g. data:/var/lib/app)")
        return _MISSING
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    if not (source.startswith("/") or _VOLUME_NAME_RE.fullmatch(source)):
        problem = (f"the source {_show(source)} is neither a volume name (letters, digits and "
                   "_ . -, at least 2 characters) nor an absolute path on the host")
    elif not target.startswith("/"):
        problem = f"the target {_show(target)} is not an absolute path in the container"
    elif any(o not in _VOLUME_OPTIONS for o in options):
        problem = (f"unknown option in {_show(parts[2])}; use ro, rw, z, Z, nocopy or a "
                   "propagation mode, separated by commas")
    else:
        return value
    ctx.error(node, path, problem)
    return _MISSING


def _network(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    return string(re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*"), "a Docker network name")(
        ctx, node, path
    )


def _pg_schema(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(nonempty=True)(ctx, node, path)
    if isinstance(value, str) and (len(value.encode()) > 63 or not value.isprintable()):
        ctx.error(node, path, f"{_show(value)} is not a PostgreSQL schema name: at most 63 "
                  "bytes of printable characters")
        return _MISSING
    return value


def _health_path(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string()(ctx, node, path)
    if isinstance(value, str) and (len(value) > 2000 or not _URL_PATH_RE.fullmatch(value)):
        ctx.error(node, path, f"{_show(value)} is not a URL path: start with /, use ASCII "
                  "without spaces (percent-encode the rest, e.g. %C3%A9 for é), an optional "
                  "?query and no #fragment")
        return _MISSING
    return value


_SOURCE_KINDS = ("env", "file", "command", "vault")
_SOURCE_HINT = ("give one source: {env: NAME}, {file: PATH}, {command: [PROGRAM, ARG, ...]} "
                "or {vault: {path: PATH, field: FIELD, mount: secret}}")
# A Vault mount or secret path: segments without spaces, ?, # or %, and no . or .. segment.
_VAULT_PATH_RE = re.compile(r"(?!(?:.*/)?\.\.?(?:/|$))[^\s/?#%]+(?:/[^\s/?#%]+)*")
_VAULT_PATH_HINT = "a path such as api/prod: parts separated by single /, no spaces, ? or #"


def _as_written(node: yaml.Node) -> str:
    """A command as the file writes it, before `${VAR}` is expanded (what may be shown)."""
    import shlex

    if isinstance(node, yaml.SequenceNode):
        return shlex.join(str(n.value) for n in node.value if isinstance(n, yaml.ScalarNode))
    return _one_line(str(node.value))


def _source(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """Where a secret's value comes from: exactly one of env, file, command, vault."""
    if not isinstance(node, yaml.MappingNode) or not node.value:
        got = "an empty mapping" if isinstance(node, yaml.MappingNode) else f"a {_kind(node)}"
        ctx.error(node, path, f"expected a source, got {got}; {_SOURCE_HINT}")
        return _MISSING
    keys = [_key(ctx, k, path) for k, _ in node.value]
    if None in keys:
        return _MISSING
    if len(keys) > 1:
        ctx.error(node, path, f"give exactly one source, not {' and '.join(map(str, keys))}; "
                  f"{_SOURCE_HINT}")
        return _MISSING
    knode, vnode = node.value[0]
    key = str(keys[0])
    kpath = _dotted(path, key)
    if key == "env":
        name = string(ENV_NAME_RE, "an environment variable name", optional=False)(
            ctx, vnode, kpath)
        return EnvSource(name) if isinstance(name, str) else _MISSING
    if key == "file":
        file = string(optional=False, nonempty=True)(ctx, vnode, kpath)
        if not isinstance(file, str):
            return _MISSING
        return FileSource(str(ctx.base / os.path.expanduser(file)))
    if key == "command":
        argv = command(ctx, vnode, kpath)
        if argv is None:
            ctx.error(vnode, kpath, "a value is required: the program and its arguments")
        if not isinstance(argv, list):
            return _MISSING
        return CommandSource(tuple(argv), _as_written(vnode))
    if key == "vault":
        vault_path = string(_VAULT_PATH_RE, _VAULT_PATH_HINT, optional=False)
        return obj(VaultSource, {"path": vault_path, "field": string(optional=False,
                                                                       nonempty=True),
                                 "mount": vault_path}, ("path", "field"))(ctx, vnode, kpath)
    close = difflib.get_close_matches(key, _SOURCE_KINDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    ctx.error(knode, kpath, f"unknown source{hint}; {_SOURCE_HINT}")
    return _MISSING


def _app_secrets(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """A list of names read from the environment, or a mapping of name -> source."""
    if _is_null(node):
        return {}
    if isinstance(node, yaml.SequenceNode):
        names = list_of(string(ENV_NAME_RE, "an environment variable name", optional=False),
                        unique=True)(ctx, node, path)
        return _MISSING if names is _MISSING else {n: EnvSource(n) for n in names}
    if not isinstance(node, yaml.MappingNode):
        ctx.error(node, path, "expected a list of environment variable names or a mapping "
                  f"of name to source, got a {_kind(node)}")
        return _MISSING
    out: dict[str, Any] = {}
    failed = False
    for knode, vnode in node.value:
        key = _key(ctx, knode, path)
        if key is None:
            failed = True
            continue
        kpath = _dotted(path, key)
        if key in out:
            ctx.error(knode, kpath, "duplicate key")
            failed = True
        elif not ENV_NAME_RE.fullmatch(key):
            ctx.error(knode, kpath, "invalid name: an environment variable name")
            failed = True
        else:
            out[key] = _source(ctx, vnode, kpath)
            failed = failed or out[key] is _MISSING
    return _MISSING if failed else out


def _secret_or_source(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """A secret value, or a source to read it from (read at the deploy's preflight)."""
    if isinstance(node, yaml.MappingNode):
        source = _source(ctx, node, path)
        return _MISSING if source is _MISSING else SourcedSecret(source, path)
    return secret_string(ctx, node, path)
_HOSTNAME_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_IMAGE_DIGEST_RE = re.compile(r"(?P<repo>[^@]+)@sha256:[0-9a-f]{64}")
# Docker's built-in networks: no container names in DNS (bridge) or no network at all.
_BUILTIN_NETWORKS = ("bridge", "host", "none", "default")


def _add_host(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """`NAME:ADDRESS` for `docker run --add-host`: ADDRESS an IP address or host-gateway."""
    value = string(optional=False)(ctx, node, path)
    if not isinstance(value, str):
        return value
    name, sep, address = value.partition(":")
    problem = None
    if not sep or not _HOSTNAME_RE.fullmatch(name) or name.startswith("*"):
        problem = "the part before the first : is not a host name"
    elif address != "host-gateway":
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problem = "the part after the first : is neither an IP address nor host-gateway"
    if problem:
        ctx.error(node, path, f"{_show(value)} is not NAME:ADDRESS ({problem}); write e.g. "
                  "host.docker.internal:host-gateway or db.internal:10.0.0.5")
        return _MISSING
    return value


def _proxy_host(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(optional=False)(ctx, node, path)
    if not isinstance(value, str):
        return value
    if len(value) > 253 or not _HOSTNAME_RE.fullmatch(value):
        ctx.error(node, path, f"{_show(value)} is not a host name: letters, digits and -, in "
                  "parts separated by single dots, optionally starting with *. (e.g. "
                  "api.example.com)")
        return _MISSING
    return value.lower()


def _proxy_path(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(nonempty=True)(ctx, node, path)
    if isinstance(value, str) and (len(value) > 1000 or "?" in value or "*" in value
                                   or "//" in value or not _URL_PATH_RE.fullmatch(value)):
        ctx.error(node, path, f"{_show(value)} is not a path prefix: start with /, use ASCII "
                  "without spaces, no ?query, no * and no //, e.g. /api")
        return _MISSING
    return value.rstrip("/") or "/" if isinstance(value, str) else value


def _batch(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "a number of hosts or a share such as 25%")
    if value is None or value is _MISSING:
        return value
    m = re.fullmatch(r"([0-9]{1,3})(%?)", value.strip())
    n = int(m.group(1)) if m else 0
    if not m or n < 1 or (m.group(2) and n > 100):
        ctx.error(node, path, f"{_show(value)} is not a batch size: a whole number of hosts "
                  "(at least 1) or a share of them from 1% to 100%, e.g. 2 or \"25%\"")
        return _MISSING
    return f"{n}{m.group(2)}"


def _proxy_tls(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    hint = "auto, internal, off, or a mapping {cert: FILE, key: FILE}"
    if isinstance(node, yaml.MappingNode):
        files = obj(ProxyTLS, {"cert": string(optional=False, nonempty=True),
                               "key": string(optional=False, nonempty=True)},
                    ("cert", "key"))(ctx, node, path)
        return ProxyTLS("files", files.cert, files.key) if isinstance(files, ProxyTLS) else files
    value = _scalar(ctx, node, path, hint)
    if value is None or value is _MISSING:
        if value is None:
            ctx.error(node, path, f"a value is required: {hint}")
        return _MISSING
    low = value.lower()
    if low in ("off", "false"):  # YAML reads an unquoted off as false: both mean off
        return ProxyTLS("off")
    if low in ("auto", "internal"):
        return ProxyTLS(low)
    ctx.error(node, path, f"{_show(value)} is not one of: {hint}")
    return _MISSING


def _pinned_image(value: str) -> bool:
    """REPOSITORY[:TAG]@sha256:<64 hex>."""
    m = _IMAGE_DIGEST_RE.fullmatch(value)
    repo = m["repo"] if m else ""
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
    return m is not None and check_repository(repo) is None


def pinned_image(example: str) -> Conv:
    """An image pinned by digest; `example` completes the error's "write ..." advice."""
    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = string(optional=False)(ctx, node, path)
        if not isinstance(value, str):
            return value
        if not _pinned_image(value):
            ctx.error(node, path, f"{_show(value)} is not an image pinned by digest: write "
                      f"REPOSITORY[:TAG]@sha256:<64 hex digits>{example}")
            return _MISSING
        return value

    return conv


_proxy_image = pinned_image(", e.g. caddy:2.10@sha256:...")
_backup_image = pinned_image(
    " of a PostgreSQL client image (pg_dump, pg_restore and psql as new as the server), "
    "e.g. postgres:16@sha256:...")


def _backup(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """The backup block: `image` is needed unless `before: never`."""
    values = obj(dict, {"before": choice("migrations", "destructive", "never"),
                        "keep": integer(1, 1000), "image": _backup_image,
                        "timeout": duration(MAX_MIGRATE_TIMEOUT)})(ctx, node, path)
    if not isinstance(values, dict):
        return _MISSING
    if values.get("before", "migrations") != "never" and "image" not in values:
        ctx.error(node, path, "image missing: give backup.image, a PostgreSQL client image "
                  "pinned by digest (or before: never to take no backups)")
        return _MISSING
    return BackupConfig(**values)


def _proxy_network(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _network(ctx, node, path)
    if isinstance(value, str) and value in _BUILTIN_NETWORKS:
        ctx.error(node, path, f"{value!r} is one of Docker's own networks, where containers "
                  "cannot reach each other by name; name a network of your own (plainsail "
                  "creates it)")
        return _MISSING
    return value


def _proxy(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """The proxy block: exactly one of host and hosts; the rest as ProxyConfig."""
    if not isinstance(node, yaml.MappingNode):
        ctx.error(node, path, f"expected a mapping, got a {_kind(node)}")
        return _MISSING
    given = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    both, neither = "host" in given and "hosts" in given, not {"host", "hosts"} & set(given)
    if both or (neither and not ctx.swarm):  # a swarm proxy does not route on a name
        ctx.error(node, path, "give exactly one of host (one name) and hosts (a list): the "
                  "host names the proxy routes to this service")
        return _MISSING
    fields: dict[str, Conv] = {
        "host": _proxy_host, "hosts": list_of(_proxy_host, min_items=1, unique=True),
        "path": _proxy_path, "tls": _proxy_tls, "http_port": integer(1, 65535),
        "https_port": integer(1, 65535), "drain": duration(HOUR, zero_ok=True),
        "network": _proxy_network, "image": _proxy_image, "nested": boolean,
        "acme": obj(ProxyACME, {"directory": _acme_directory,
                                "ca_root": string(nonempty=True),
                                "email": string(re.compile(r"[^@\s]+@[^@\s]+"),
                                                "an e-mail address")}, ("directory",)),
    }
    values = obj(dict, fields, ("image",))(ctx, node, path)
    if not isinstance(values, dict):
        return _MISSING
    host = values.pop("host", None)
    if host is not None:
        values["hosts"] = [host]
    tls = values.get("tls")
    if values.get("acme") is not None and isinstance(tls, ProxyTLS) and tls.mode != "auto":
        ctx.error(node, f"{path}.acme", f"is for tls: auto, but tls is {tls.mode}")
        return _MISSING
    return ProxyConfig(**values)


def _acme_directory(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(optional=False, nonempty=True)(ctx, node, path)
    if isinstance(value, str) and (not is_web_url(value) or not value.startswith("https://")):
        ctx.error(node, path, f"{_show(value)} is not an https:// URL of an ACME directory, "
                  "e.g. https://ca.internal:9000/acme/acme/directory")
        return _MISSING
    return value


# The registry image a host without docker-registry runs: pinned by digest.
_registry_image = pinned_image(", e.g. registry:2@sha256:...")


_REGISTRY_FIELDS: dict[str, Conv] = {
    "username": string(re.compile(r"[^:]*"), "a user name cannot contain ':'"),
    "password": _secret_or_source,
    "insecure": boolean,
    "mode": choice("registry", "host"),
    "port": integer(1, 65535),
    "image": _registry_image,
}
_HOST_MODE_ONLY = ("port", "image")
_REGISTRY_MODE_ONLY = ("username", "password", "insecure")
_REGISTRY_HINT = ("give both username and password, or remove the block to use your Docker "
                  "credentials")


def _registry(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """Both username and password, or no block at all. Values that interpolate to an empty
    username mean "use the Docker credentials", as documented."""
    if _is_null(node) or (isinstance(node, yaml.MappingNode) and not node.value):
        ctx.error(node, path, f"the block is empty; {_REGISTRY_HINT}")
        return _MISSING
    if isinstance(node, yaml.MappingNode):
        given = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        mode = next((v.value for k, v in node.value if k.value == "mode"
                     and isinstance(v, yaml.ScalarNode)), "registry")
        if mode == "host":
            for knode, _ in node.value:
                if knode.value in _REGISTRY_MODE_ONLY:
                    ctx.error(knode, f"{path}.{knode.value}", "is not used with mode: host "
                              "(plainsail runs the registries itself, on loopback); remove it")
            return obj(RegistryAuth, _REGISTRY_FIELDS)(ctx, node, path)
        for knode, _ in node.value:
            if knode.value in _HOST_MODE_ONLY:
                ctx.error(knode, f"{path}.{knode.value}", "is used only with mode: host; "
                          "remove it, or add mode: host")
        missing = [k for k in ("username", "password") if k not in given]
        if missing and given & {"username", "password"}:
            ctx.error(node, path, f"{' and '.join(missing)} missing; {_REGISTRY_HINT}")
    auth = obj(RegistryAuth, _REGISTRY_FIELDS)(ctx, node, path)
    if not isinstance(auth, RegistryAuth):
        return _MISSING
    if auth.username and not auth.password:
        pw = next((v for k, v in node.value if k.value == "password"), node)
        ctx.error(pw, f"{path}.password", "is empty; registry.username needs its password "
                  "(e.g. password: ${REGISTRY_PASSWORD}), or remove the block to use your "
                  "Docker credentials")
        return _MISSING
    return auth


_REPOSITORY_ENTRY_HINT = ("a repository such as registry.example.com/team/api, or a prefix "
                          "such as registry.example.com/team/*")


def _signed_repository(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """A repository a signature may name (`signing.repositories`), or `PREFIX/*`."""
    value = string(optional=False, nonempty=True)(ctx, node, path)
    if not isinstance(value, str):
        return value
    problem = check_repository(value.removesuffix("/*"))
    if problem or value == "*":
        ctx.error(node, path, f"{problem or _show(value) + ' is not valid'}; write "
                  f"{_REPOSITORY_ENTRY_HINT}")
        return _MISSING
    return value


def _regexp(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(nonempty=True)(ctx, node, path)
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            ctx.error(node, path, f"is not a valid regular expression: {exc}")
            return _MISSING
    return value


def _keyless(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """issuer, trusted_root, and exactly one of identity and identity_regexp."""
    value = obj(KeylessConfig, {
        "issuer": string(optional=False, nonempty=True),
        "identity": string(nonempty=True),
        "identity_regexp": _regexp,
        "trusted_root": string(optional=False, nonempty=True),
    }, ("issuer", "trusted_root"))(ctx, node, path)
    if isinstance(value, KeylessConfig) and (value.identity is None) == (
            value.identity_regexp is None):
        ctx.error(node, path, "give exactly one of identity (the exact certificate identity, "
                  "e.g. the workflow URL) and identity_regexp")
        return _MISSING
    return value


def _webhook(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """A secret http(s) URL; problems never show it. An empty value is allowed (skipped).
    A URL from a source is checked when it is read."""
    if isinstance(node, yaml.MappingNode):
        return _secret_or_source(ctx, node, path)
    secret = secret_string(ctx, node, path)
    if isinstance(secret, Secret) and secret and not is_web_url(secret.reveal()):
        ctx.error(node, path, "not an http(s) URL with a host (the value is secret, so it is "
                  "not shown)")
        return _MISSING
    return secret


def is_web_url(url: str) -> bool:
    from urllib.parse import urlsplit

    import httpx

    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return False
    try:
        parts = urlsplit(url)
        # .port raises ValueError for a port that is not 0-65535; 0 is no port to send to
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port == 0:
            return False
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        return False
    return True


# A placement constraint as `docker service create --constraint` takes it.
_CONSTRAINT_RE = re.compile(
    r"(?P<attr>node\.(?:id|hostname|role|platform\.os|platform\.arch|labels\.[A-Za-z0-9_.-]+)"
    r"|engine\.labels\.[A-Za-z0-9_.-]+)\s*(?P<op>==|!=)\s*(?P<value>[^\s=!,]+)")
_CONSTRAINT_HINT = ("write ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, where ATTRIBUTE is node.id, "
                    "node.hostname, node.role, node.platform.os, node.platform.arch, "
                    "node.labels.NAME or engine.labels.NAME (e.g. node.role==worker)")
_MEMORY_RE = re.compile(r"(?P<n>[0-9]{1,15})\s?(?P<unit>[kmgt]?)(?:i?b|i)?", re.I)
MIN_TASK_MEMORY = 6 * 1024 * 1024  # Docker refuses a memory limit below 6 MiB
MAX_TASK_MEMORY = 1024**4
MAX_TASK_CPUS = 1024.0
MAX_REPLICAS = 1000


def _constraint(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = string(optional=False, nonempty=True)(ctx, node, path)
    if not isinstance(value, str):
        return value
    m = _CONSTRAINT_RE.fullmatch(value.strip())
    if m is None:
        ctx.error(node, path, f"{_show(value)} is not a placement constraint; {_CONSTRAINT_HINT}")
        return _MISSING
    if m["attr"] == "node.role" and m["value"] not in ("manager", "worker"):
        ctx.error(node, path, f"node.role is manager or worker, not {_show(m['value'])}")
        return _MISSING
    return f"{m['attr']}{m['op']}{m['value']}"


def _cpus(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "a number of CPUs")
    if value is None or value is _MISSING:
        return value
    try:
        if not re.fullmatch(r"[0-9]{1,4}(?:\.[0-9]{1,9})?", value):
            raise ValueError
        cpus = float(value)
    except ValueError:
        ctx.error(node, path, f"expected a number of CPUs such as 0.5 or 2, got {_show(value)}")
        return _MISSING
    if not 0 < cpus <= MAX_TASK_CPUS:
        ctx.error(node, path, f"{value} is out of range: more than 0 and at most "
                  f"{MAX_TASK_CPUS:g} CPUs")
        return _MISSING
    return cpus


def _memory(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = _scalar(ctx, node, path, "a memory size")
    if value is None or value is _MISSING:
        return value
    m = _MEMORY_RE.fullmatch(value.strip())
    if m is None:
        ctx.error(node, path, f"expected a memory size such as 256M or 1G (units K, M, G, T: "
                  f"powers of 1024), got {_show(value)}")
        return _MISSING
    unit = m["unit"].lower()
    size = int(m["n"]) * 1024 ** ("kmgt".index(unit) + 1 if unit else 0)
    if not MIN_TASK_MEMORY <= size <= MAX_TASK_MEMORY:
        ctx.error(node, path, f"{value} is out of range: at least 6M (Docker's smallest "
                  "memory limit) and at most 1T")
        return _MISSING
    return size


_SWARM_RESOURCES = obj(SwarmResources, {"cpus": _cpus, "memory": _memory})


def _swarm_resources(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    value = obj(SwarmResourceSet, {"limits": _SWARM_RESOURCES,
                                   "reservations": _SWARM_RESOURCES})(ctx, node, path)
    if not isinstance(value, SwarmResourceSet):
        return value
    for name in ("cpus", "memory"):
        lim, res = getattr(value.limits, name), getattr(value.reservations, name)
        if lim is not None and res is not None and res > lim:
            ctx.error(node, f"{path}.reservations.{name}", f"is more than limits.{name}; a "
                      "task cannot be given more than it may use")
            return _MISSING
    return value


_SWARM = obj(SwarmConfig, {
    "manager": _host,
    "replicas": integer(1, MAX_REPLICAS),
    "placement": list_of(_constraint, unique=True),
    "update": obj(SwarmUpdate, {"parallelism": integer(0, MAX_REPLICAS),
                                "delay": duration(HOUR, zero_ok=True),
                                "order": choice("start-first", "stop-first")}),
    "resources": _swarm_resources,
    "healthcheck": boolean,
}, ("manager",))
def percent(lo: float, hi: float, *, lo_open: bool = False) -> Conv:
    """A share written as `10%` (or a plain number of percent), between lo and hi."""

    def conv(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
        value = _scalar(ctx, node, path, "a percentage such as 10%")
        if value is None or value is _MISSING:
            return value
        text = value.strip().removesuffix("%").strip()
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        low_ok = number > lo if lo_open else number >= lo
        if not math.isfinite(number) or not low_ok or number > hi or not text.isascii():
            bound = f"more than {lo:g}%" if lo_open else f"{lo:g}%"
            ctx.error(node, path, f"expected a percentage from {bound} to {hi:g}% such as "
                      f"10%, got {_show(value)}")
            return _MISSING
        return number

    return conv


MAX_LATENCY_RATIO = 1000.0


def _latency_limit(ctx: _Ctx, node: yaml.Node, path: str) -> Any:
    """`2x` (a ratio to the old version's p95, more than 1) or a duration (`800ms`)."""
    value = _scalar(ctx, node, path, "a ratio such as 2x or a duration such as 800ms")
    if value is None or value is _MISSING:
        return value
    text = value.strip()
    if text.lower().endswith("x"):
        try:
            ratio = float(text[:-1])
        except ValueError:
            ratio = math.nan
        if not math.isfinite(ratio) or not 1 < ratio <= MAX_LATENCY_RATIO:
            ctx.error(node, path, f"a ratio to the old version's p95 must be more than 1x "
                      f"and at most {MAX_LATENCY_RATIO:g}x, got {_show(value)}")
            return _MISSING
        return LatencyLimit(ratio=ratio)
    try:
        seconds = parse_duration(text)
    except ValueError:
        ctx.error(node, path, f"expected a ratio such as 2x or a duration such as 800ms, "
                  f"got {_show(value)}")
        return _MISSING
    problem = check_bounds(seconds, most=MAX_HEALTH_TIMEOUT, zero_ok=False)
    if problem:
        ctx.error(node, path, problem)
        return _MISSING
    return LatencyLimit(ratio=None, seconds=seconds)


_SCHEMA = obj(
    Config,
    {
        "service": string(SERVICE_RE, "lowercase letters, digits and -, starting with a letter "
                          "or digit, at most 63 characters", optional=False),
        "image": _image,
        "registry": _registry,
        "build": obj(
            BuildConfig,
            {
                "context": string(nonempty=True),
                "dockerfile": string(nonempty=True),
                "args": str_map(re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "a build argument name",
                                lines=None),
                "tag_length": integer(7, 40),
                "source": string(),
            },
        ),
        "signing": obj(
            SigningConfig, {"key": string(), "public_key": string(), "verify": boolean,
                            "repositories": list_of(_signed_repository, unique=True),
                            "keyless": _keyless, "format": choice("classic", "bundle")}
        ),
        "hosts": _hosts,
        "ssh": obj(
            SSHConfig,
            {"identity_file": string(), "known_hosts": string(), "options": str_map(
                re.compile(r"[A-Za-z][A-Za-z0-9]*"), "an OpenSSH option name such as ProxyJump",
                nonempty=True)},
        ),
        "host_dir": _host_dir,
        "app": obj(
            AppConfig,
            {
                "port": integer(1, 65535),
                "publish": integer(1, 65535),
                "env": str_map(ENV_NAME_RE, "an environment variable name", lines=(
                    "contains a line break, which docker --env-file cannot carry; encode it "
                    "(e.g. base64) or put it in a mounted file")),
                "secrets": _app_secrets,
                "network": _network,
                "volumes": list_of(_volume),
                "init": boolean,
                "stop_timeout": duration(MAX_STOP_TIMEOUT, zero_ok=True),
                "command": command,
                "add_hosts": list_of(_add_host, unique=True),
            },
        ),
        "migrate": obj(MigrateConfig, {"command": command,
                                       "timeout": duration(MAX_MIGRATE_TIMEOUT),
                                       "layout": choice("auto", *MIGRATION_LAYOUTS),
                                       "schema": _pg_schema},
                       ("command",)),
        "health": obj(
            HealthConfig,
            {
                "path": _health_path,
                "status": integer(200, 599),
                "body_contains": string(multiline=True),
                "attempts": integer(1, 10000),
                "interval": duration(MAX_HEALTH_INTERVAL, zero_ok=True),
                "timeout": duration(MAX_HEALTH_TIMEOUT),
            },
        ),
        "timeouts": obj(TimeoutsConfig, {"command": duration(MAX_COMMAND_TIMEOUT),
                                         "pull": duration(MAX_PULL_TIMEOUT)}),
        "on_failure": choice("restore", "stop"),
        "retain": integer(0, 100),
        "notify": list_of(obj(NotifyTarget, {"webhook": _webhook}, ("webhook",))),
        "proxy": _proxy,
        "rollout": obj(RolloutConfig, {"batch": _batch,
                                       "pause": duration(MAX_HEALTH_INTERVAL, zero_ok=True),
                                       "canary": integer(0, 1000),
                                       "max_parallel": integer(1, 100),
                                       "on_failure": choice("restore", "stop")}),
        "backup": _backup,
        "target": choice("hosts", "swarm"),
        "swarm": _SWARM,
        "traffic_gate": obj(TrafficGateConfig, {
            "window": duration(MAX_TRAFFIC_WINDOW),
            "canary": percent(0, 100, lo_open=True),
            "max_error_rate": percent(0, 100),
            "max_latency_p95": _latency_limit,
            "latency_floor": duration(MAX_HEALTH_TIMEOUT, zero_ok=True),
            "min_requests": integer(1, 10_000_000),
        }),
    },
    ("service", "image"),
)


def volumes_in_state(volumes: list[str], host_dir: str) -> list[str]:
    """The app.volumes whose host path is host_dir (an absolute path) or inside it:
    plainsail's own state (env files with secrets, the proxy's admin socket, the host
    registry's password) must not be handed to an app."""
    state = posixpath.normpath(host_dir)
    found = []
    for volume in volumes:
        source = posixpath.normpath(volume.split(":", 1)[0])
        if source.startswith("/") and (source == state or source.startswith(
                state.rstrip("/") + "/") or state.startswith(source.rstrip("/") + "/")):
            found.append(volume)
    return found


def _cross_checks(cfg: Config, ctx: _Ctx, lines: dict[str, int]) -> None:
    def err(path: str, msg: str) -> None:
        line = lines.get(path)
        ctx.problems.append(f"{'line ' + str(line) + ': ' if line else ''}{path}: {msg}")

    if cfg.host_dir.startswith("/"):
        for volume in volumes_in_state(cfg.app.volumes, cfg.host_dir):
            err("app.volumes", f"{_show(volume)} mounts plainsail's own state (host_dir "
                f"{cfg.host_dir}, or a folder holding it) into the app; mount another folder")

    overlap = set(cfg.app.env) & set(cfg.app.secrets)
    for name in sorted(overlap):
        err("app.secrets", f"{name} is both in app.env and app.secrets; keep it in one place")
    if cfg.app.network == "host" and cfg.app.publish not in (None, cfg.app.port):
        err("app.publish", "with network: host the app's own port is used; remove publish "
            "or make it equal to app.port")
    if cfg.proxy is not None:
        if cfg.app.publish is not None:
            err("app.publish", "with a proxy nothing is published but the proxy's ports; "
                "remove app.publish (users reach the app through proxy.host)")
        if cfg.app.network == "host":
            err("app.network", "with a proxy the app runs on proxy.network, next to the "
                "proxy; remove network: host")
        if cfg.proxy.http_port == cfg.proxy.https_port:
            err("proxy.https_port", "must differ from proxy.http_port")
    if cfg.traffic_gate is not None and cfg.proxy is None:
        err("traffic_gate", "needs the proxy (it watches the answers the proxy routes to "
            "each version and routes back); add a proxy block or remove traffic_gate")
    if cfg.traffic_gate is not None and cfg.traffic_gate.canary == 100:
        err("traffic_gate.canary", "100% is the whole route; leave canary out to switch "
            "everything at once")
    if len(set(cfg.hosts)) != len(cfg.hosts):
        err("hosts", "a host is listed twice")
    if (cfg.backup is not None and cfg.backup.before != "never"
            and "DATABASE_URL" not in cfg.app.secrets):
        err("backup", "backs up the database the app's DATABASE_URL secret names, but "
            "app.secrets has no DATABASE_URL; add it there (a URL with a password belongs "
            "in secrets, not app.env)")
    _on_failure(cfg, err, lines)
    _swarm_checks(cfg, err, lines)
    first, sep, _ = cfg.image.partition("/")
    if cfg.host_mode and sep and registry_host_of(cfg.image) == first:
        err("image", f"with registry.mode host the image travels without a registry: give "
            f"the repository without a registry host ({cfg.image[len(first) + 1:]}), not "
            f"{cfg.image}")


def _on_failure(cfg: Config, err: Callable[[str, str], None], lines: dict[str, int]) -> None:
    """rollout.on_failure is where on_failure belongs; the top-level key of older configs
    still works. Both given, they must agree. The value in force is set in both places."""
    if "rollout.on_failure" in lines:
        if "on_failure" in lines and cfg.on_failure != cfg.rollout.on_failure:
            err("on_failure", f"{cfg.on_failure} here, but rollout.on_failure is "
                f"{cfg.rollout.on_failure}; keep only rollout.on_failure")
            return
        object.__setattr__(cfg, "on_failure", cfg.rollout.on_failure)
    else:
        object.__setattr__(cfg, "rollout", replace(cfg.rollout, on_failure=cfg.on_failure))


def _swarm_checks(cfg: Config, err: Callable[[str, str], None], lines: dict[str, int]) -> None:
    """What `target: swarm` needs, and what Swarm cannot do: one line each."""
    if cfg.target != "swarm":
        if cfg.swarm is not None:
            err("swarm", "is used only with target: swarm; add target: swarm or remove it")
        return
    if cfg.swarm is None:
        err("target", "swarm needs a swarm block naming its manager, e.g. "
            "swarm: {manager: ssh://deploy@manager-1}")
        return
    if "hosts" not in lines:
        object.__setattr__(cfg, "hosts", [cfg.swarm.manager])
    elif cfg.hosts != [cfg.swarm.manager]:
        err("hosts", "with target swarm plainsail reaches the cluster through swarm.manager "
            f"only; list just it ([{cfg.swarm.manager}]) or remove hosts")
    if cfg.host_mode:
        err("registry.mode", "host cannot serve a swarm: every node pulls the image from a "
            "registry by digest; use a registry every node reaches")
    if cfg.app.network in ("host", "none"):
        err("app.network", f"{cfg.app.network} is not available to a swarm service; remove it "
            f"(the default is the overlay network {SWARM_NETWORK!r}) or name an overlay network")
    if "rollout" in lines:
        err("rollout", "is for target hosts; with target swarm the update is paced by "
            "swarm.update (parallelism, delay, order); remove rollout")
    if cfg.on_failure == "stop":
        err("on_failure", "stop is not available with target swarm: a failed update is always "
            "restored to the previous recorded digest; remove on_failure")
    if cfg.traffic_gate is not None:
        err("traffic_gate", "is not available with target swarm yet; remove it")
    if cfg.proxy is not None:
        _swarm_proxy_checks(cfg, err, lines)


# The proxy keys that mean something for a swarm proxy (a global Caddy service).
_SWARM_PROXY_KEYS = ("host", "hosts", "image", "http_port", "tls")


def _swarm_proxy_checks(cfg: Config, err: Callable[[str, str], None],
                        lines: dict[str, int]) -> None:
    """With target swarm the proxy is a global Caddy service serving plain HTTP on
    proxy.http_port of every node, behind the operator's load balancer."""
    assert cfg.proxy is not None
    for key in sorted(k.split(".")[1] for k in lines
                      if k.startswith("proxy.") and k.count(".") == 1):
        if key not in _SWARM_PROXY_KEYS:
            err(f"proxy.{key}", "is for target hosts; with target swarm the proxy serves plain "
                "HTTP on proxy.http_port of every node, on the service's overlay network; "
                f"remove proxy.{key}")
    if "proxy.tls" in lines and cfg.proxy.tls.mode != "off":
        err("proxy.tls", "with target swarm TLS ends at your load balancer, which sends "
            "plain HTTP to proxy.http_port on every node; set tls: off")
    object.__setattr__(cfg, "proxy", replace(cfg.proxy, tls=ProxyTLS(mode="off")))


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


def _compose(text: str) -> yaml.Node | None:
    """The config's nodes, refusing anchors and aliases (an alias bomb expands a few hundred
    bytes into gigabytes once walked) and nesting deeper than MAX_DEPTH, event by event."""
    return compose_yaml(text, max_depth=MAX_DEPTH, aliases=False, no_aliases=(
        "YAML anchors and aliases are not supported in plainsail.yml; write the values out"))


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        return f"line {line}: not valid YAML: the character {shown} is not allowed"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    return _one_line(f"{where}not valid YAML: {problem}")


def parse(text: str, path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Validate the YAML text of a config; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    name = str(path)
    try:
        root = _compose(text)
    except YamlRefused as exc:
        raise ConfigError(str(exc), name) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, text), name) from None
    if root is None:
        raise ConfigError("the file is empty; see the example in the README", name)
    ctx = _Ctx(env, path.parent)
    ctx.swarm = isinstance(root, yaml.MappingNode) and any(
        isinstance(k, yaml.ScalarNode) and k.value == "target" and isinstance(
            v, yaml.ScalarNode) and v.value == "swarm" for k, v in root.value)
    result = _SCHEMA(ctx, root, "")
    if ctx.problems or result is _MISSING:
        raise ConfigError(ctx.problems or ["invalid configuration"], name)
    cfg: Config = result
    object.__setattr__(cfg, "path", path)
    _cross_checks(cfg, ctx, _top_lines(root))
    if ctx.problems:
        raise ConfigError(ctx.problems, name)
    return cfg


# The commands that work with target: swarm (they do not act on hosts); the others refuse it.
SWARM_COMMANDS = ("config check", "build", "sign", "verify", "provenance", "lint", "deploy",
                  "rollback", "recover", "status", "history", "logs", "lock")


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
    *, swarm_ok: bool = False,
) -> Config:
    """Read and validate a config file (default: ./plainsail.yml). Unless `swarm_ok`, a
    config with target: swarm is refused: the caller acts on hosts the hosts way."""
    p = Path(path or DEFAULT_FILE)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            "not found; run plainsail in the folder holding plainsail.yml or pass "
            "--config PATH",
            str(p),
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", str(p)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_FILE_BYTES // 1024} KiB; a plainsail.yml is a "
                          "few kilobytes: is this the right file?", str(p))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte offset {exc.start}); save the file as "
                          "UTF-8", str(p)) from None
    cfg = parse(text, p.absolute(), env)
    if cfg.target == "swarm" and not swarm_ok:
        raise ConfigError("target: swarm: this command does not support the swarm target yet; "
                          f"these do: {', '.join(SWARM_COMMANDS)}", str(p))
    # Every command that read this config redacts the app's secret values wherever text
    # leaves the program (status, logs and history print what the app said, too).
    values = os.environ if env is None else env
    # Only values already in the environment: no other source is read before a deploy.
    from plainsail.config import weak
    from plainsail.config.secretsources import env_values

    weak.declare(cfg)  # output keeps the service, image, host and user names readable
    env_values(cfg, values)
    return cfg


def to_display(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data with every secret shown as `***`."""
    from dataclasses import fields, is_dataclass

    def conv(value: Any) -> Any:
        if isinstance(value, SourcedSecret):
            return f"{value} (from the {value.source.describe()}, read at deploy time)"
        if isinstance(value, Secret):
            return str(value)
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: conv(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, dict):
            return {k: conv(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [conv(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    data: dict[str, Any] = conv(cfg)
    data.pop("path", None)
    if cfg.target == "swarm":
        data["app"]["network"] = cfg.swarm_network
    return data
