"""Property tests: no plainsail.yml can crash `config check`, and no accepted one can crash
the pure steps of planning a deploy.

Configs are a valid base with random mutations: keys set, replaced or removed, scalars of
every YAML type (huge numbers, unicode, control characters, empty, null), lists, nested
mappings, anchors and aliases, raw text spliced in, documents cut short; each example is
rendered three ways, so one run parses over 5,000 documents. `config.parse` must either
return a Config or raise ConfigError (one line per problem, secrets never shown); for every
accepted Config the argv builders, host parsing, health check, HTTP request line, env file,
durations and webhook URLs must work. Another test feeds random argument lists to the CLI
parser. Derandomized and without an example database, so every run sees the same examples.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import io
import math
import os
import threading
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plainsail.cli import COMMANDS, build_parser
from plainsail.config import model as configlib
from plainsail.deploy import plan
from plainsail.deploy.health import check
from plainsail.errors import ConfigError
from plainsail.hosts import docker
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.containers import fingerprint
from plainsail.hosts.state import env_file_content

SECRET = "T0KEN-never-shown"
ENV = {
    "HOOK": f"https://hooks.example/{SECRET}",
    "BAD_HOOK": f"not a url {SECRET}",
    "REG_PW": f"pw-{SECRET}",
    "REGISTRY_PASSWORD": f"pw-{SECRET}",
    "EMPTY": "",
    "LINES": "two\nlines",
    "NUL_FREE": "plain",
    "HUGE": "9" * 400,
    "UNDECODABLE": "caf\udce9",  # a non-UTF-8 byte, as os.environ keeps it
    "DATABASE_URL": "postgresql://u:p@db/x",
}
BASE: dict[str, Any] = {
    "service": "notes-api",
    "image": "registry.example.com/acme/notes-api",
    "registry": {"username": "ci", "password": "${REG_PW}"},
    "build": {"context": ".", "dockerfile": "Dockerfile", "args": {"A": "b"}, "tag_length": 8},
    "signing": {"key": "cosign.key", "public_key": "cosign.pub", "verify": True},
    "hosts": ["local", "ssh://deploy@web-1:2222", "deploy@web-2"],
    "ssh": {"identity_file": "~/.ssh/id", "known_hosts": "~/.ssh/kh", "options": {"A": "b"}},
    "host_dir": "~/.plainsail",
    "app": {"port": 8080, "publish": 8080, "env": {"LOG_LEVEL": "info"},
            "secrets": ["DATABASE_URL"], "network": "bridge", "volumes": ["data:/data"],
            "init": True, "stop_timeout": "10s", "command": ["serve", "--port", "8080"]},
    "migrate": {"command": ["plainsail", "migrate"], "timeout": "5m"},
    "health": {"path": "/health", "status": 200, "body_contains": "ok", "attempts": 30,
               "interval": "1s", "timeout": "2s"},
    "on_failure": "restore",
    "retain": 3,
    "notify": [{"webhook": "${HOOK}"}],
}
SECRET_PATHS = [("registry", "password"), ("notify", 0, "webhook")]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


PATHS = _paths(BASE)
KEYS = sorted({p[-1] for p in PATHS if isinstance(p[-1], str)}) + ["extra", "Service", ""]

interesting = st.sampled_from([
    "", " ", "~", "null", "0", "-1", "1e11", "1e400", "9" * 400, ".inf", "-.inf", ".nan",
    "0s", "500ms", "1h", "25h", "1h30m", "10 s", "/health", "/health/é", "/a b", "/%C3%A9",
    "/x?y=1", "/x#y", "local", "ssh://u@h", "ssh://u@h:0", "ssh://u:p@h", "ssh://[::1]:22",
    "u@h", "@h", "http://x", "https://h.example/x", "http://127.0.0.1:abc/", "not-a-url",
    "a..b/x", ".a/x", "localhost:5000/x", "[::1]:5000/x", "r.example.com:99999/x", "x@sha",
    "${EMPTY}", "${LINES}", "${HUGE}", "${UNDECODABLE}",
    "${UNSET}", "${UNSET:-d}", "$${lit}", "${}", "${a b}", "${", "a\nb", "a\x00b", "a\rb",
    "\u2028", "\x85", "\ud800", "é", "日本", "\U0001f600", "a" * 300, "-", "--rm", "'",
    '"', "a:b", ":", "data:", "data:/d:ro", "/x:/y:z,ro", "./d:/d", "host", "bridge",
    "restore", "stop", "true", "no", "on", "0x10", "1_000", "٣", "65535", "65536", "199",
    "200", "599",
])
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=20),
    interesting,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                        max_size=4),
    ),
    max_leaves=10,
)


def _set(data: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node = data
    for step in path[:-1]:
        if isinstance(node, dict) and isinstance(node.get(step), dict | list):
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node) and \
                isinstance(node[step], dict | list):
            node = node[step]
        else:
            return
    last = path[-1]
    if isinstance(node, dict):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if delete:
            del node[last]
        else:
            node[last] = value


mutation = st.one_of(
    st.tuples(st.sampled_from(PATHS), values, st.booleans()),
    st.tuples(st.sampled_from(PATHS).flatmap(
        lambda p: st.sampled_from(KEYS).map(lambda k: (*p, k))), values, st.just(False)),
    st.tuples(st.sampled_from(SECRET_PATHS),
              st.sampled_from(["${HOOK}", "${BAD_HOOK}", "${REG_PW}", "${HOOK} x",
                               "x${HOOK}", "${BAD_HOOK}\n", "${UNDECODABLE}"]).map(str),
              st.just(False)),
)

ANCHORS = [
    "x: &a [1, 2]\ny: *a\n",
    "app:\n  env: &e {A: '1'}\nhealth: *e\n",
    "app: &a\n  port: 1\n",
    "<<: {service: x}\n",
    "a: &a [*a]\n",
    "app: *nothing\n",
]


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the fast one, where built


def _dump(data: Any, flow: bool | None, unicode: bool = True) -> str:
    for dumper in (_DUMPER, yaml.SafeDumper):  # only the pure one escapes lone surrogates
        try:
            return yaml.dump(data, Dumper=dumper, allow_unicode=unicode, sort_keys=False,
                             default_flow_style=flow)
        except UnicodeEncodeError:
            continue
    raise AssertionError("unreachable: the pure dumper escapes everything")


damage = st.one_of(
    st.sampled_from(ANCHORS).map(lambda a: ("anchor", a, 0)),
    st.tuples(st.just("splice"), st.one_of(st.text(max_size=12), interesting),
              st.integers(0, 10**6)),
    st.tuples(st.just("cut"), st.just(""), st.integers(0, 10**6)),
)


def _variants(data: Any, how: tuple[str, str, int]) -> list[str]:
    """Three documents from one: block style, flow style (ASCII only), and one damaged
    (an anchor added, text spliced in, or the text cut short)."""
    block = _dump(data, False)
    kind, extra, at = how
    at %= len(block) + 1
    damaged = {"anchor": block + extra, "splice": block[:at] + extra + block[at:],
               "cut": block[:at]}[kind]
    return [block, _dump(data, True, unicode=False), damaged]


def _check_accepted(cfg: configlib.Config) -> None:
    """Every pure planning step works with an accepted config."""
    target = plan.Target(cfg.image, "a3f1b2c3", "sha256:" + "ab" * 32, True)
    name = plan.container_name(cfg.service, target.tag)
    argvs = [plan.app_run_argv(cfg, target, name, "/h/env", "20260101-000000-abcdef", "fp"),
             plan.run_options(cfg), docker.stop(name, cfg.app.stop_timeout)]
    if cfg.migrate is not None:
        argvs.append(plan.migrate_argv(cfg, target, "/h/env", "20260101-000000-abcdef"))
    for argv in argvs:
        assert all(isinstance(a, str) and "\x00" not in a for a in argv), argv
    hosts = plan.select_hosts(cfg, [])
    assert [h.name for h in hosts] == [parse_host(h).name for h in cfg.hosts]
    assert plan.select_hosts(cfg, [cfg.hosts[0]])
    plan.ssh_options(cfg)
    env = plan.app_env(cfg, {name: "secret-value" for name in cfg.app.secrets})
    content = env_file_content(env)
    fingerprint(content, plan.run_options(cfg))
    hc = cfg.health
    assert check(hc.status, hc.body_contains or "", hc) is None
    assert check(hc.status + 1 if hc.status < 599 else 200, "", hc) is not None
    conn = http.client.HTTPConnection("127.0.0.1", 1)
    conn.putrequest("GET", hc.path)  # validates and encodes the request line; no I/O
    conn.close()
    durations = [cfg.app.stop_timeout, hc.interval, hc.timeout]
    durations += [cfg.migrate.timeout] if cfg.migrate else []
    for d in durations:
        assert isinstance(d, float) and math.isfinite(d) and 0 <= d <= threading.TIMEOUT_MAX
    assert hc.timeout > 0 and (cfg.migrate is None or cfg.migrate.timeout > 0)
    for t in cfg.notify:
        url = t.webhook.reveal()
        if url:
            httpx.URL(url)
            urllib.request.Request(url, data=b"{}", method="POST")
    shown = configlib.to_display(cfg)
    yaml.safe_dump(shown)  # what `config check` prints
    assert SECRET not in repr(shown)


def _check_refused(err: ConfigError) -> None:
    assert err.problems
    for p in err.problems:
        assert p and "\n" not in p and "\r" not in p, p
    assert SECRET not in str(err)


def _parse(text: str) -> None:
    try:
        cfg = configlib.parse(text, Path("/x/plainsail.yml"), ENV)
    except ConfigError as err:
        _check_refused(err)
        return
    _check_accepted(cfg)


# 800 + 900 examples, three documents each: over 5,000 configs per run of the whole suite
# (scripts/test.sh sets PLAINSAIL_FUZZ=full); a quarter of that in the fast unit suite.
SCALE = 1.0 if os.environ.get("PLAINSAIL_FUZZ") == "full" else 0.25


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@settings(FUZZ, max_examples=examples(800))
@given(st.lists(mutation, max_size=4), damage)
def test_mutated_configs_never_crash(mutations: list[tuple[Any, Any, bool]],
                                     how: tuple[str, str, int]) -> None:
    data = copy.deepcopy(BASE)
    for path, value, delete in mutations:
        _set(data, path, value, delete)
    for text in _variants(data, how):
        _parse(text)


@settings(FUZZ, max_examples=examples(900))
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6), damage)
def test_random_documents_never_crash(data: dict[str, Any], how: tuple[str, str, int]) -> None:
    """Whole documents made of random keys and values, from the required keys up."""
    doc: dict[str, Any] = {"service": "api", "image": "r.example.com/a/b", **data}
    for text in _variants(doc, how):
        _parse(text)


def test_the_base_config_is_accepted() -> None:
    """The fuzz tests start from a config that passes, so they exercise planning too."""
    for text in _variants(BASE, ("anchor", "", 0))[:2]:
        _check_accepted(configlib.parse(text, Path("/x/plainsail.yml"), ENV))


# ---------------------------------------------------------------- CLI arguments

OPTIONS = ["-c", "--config", "-v", "--verbose", "--json", "--host", "--dry-run", "--force",
           "--to", "--limit", "--tail", "--key", "--tag", "--allow-dirty", "--dir",
           "--lock-timeout", "--wait", "--format", "--since", "--keep", "--workdir",
           "--help", "-h", "--version", "--", "-", "up", "status", "check", "release",
           "migrations", "sarif", "x", "-1", "9" * 30]
tokens = st.one_of(st.sampled_from(sorted(COMMANDS)), st.sampled_from(OPTIONS),
                   st.text(max_size=10))


PARSER = build_parser()


@settings(max_examples=examples(1000), deadline=None, derandomize=True, database=None)
@given(st.lists(tokens, max_size=6))
def test_cli_arguments_never_crash_the_parser(argv: list[str]) -> None:
    parser = PARSER
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2), (argv, exc.code)
        assert exc.code == 0 or "error:" in err.getvalue()
