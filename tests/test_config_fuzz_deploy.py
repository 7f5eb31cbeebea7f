"""The fuzzing property, on a real host: configs drawn from the same strategy as
tests/test_config_fuzz.py (a full config with random mutations), and accepted by `config
check`, either deploy or stop in preflight, never after a container was stopped.

The mutations are test_config_fuzz's (values from its strategy, or a key removed) at the
keys the real fixtures leave free: extra env settings, `init`, `stop_timeout`,
`add_hosts`, `host_dir`, `retain`, `on_failure`, `signing.verify`. The keys they
fix are set back after the mutations: the service, image, signing key, host and SSH
settings of the test host, and what the example app needs to work (its port, network,
secret, command, migrations and health check). Hypothesis draws the mutation lists
derandomized, without shrinking or an example database, so every run deploys the same
configs; at most MAX_DEPLOYS distinct accepted ones are deployed, each over the version the
previous one left running (v1 and v2 in turn).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from plainsail.config import model as configlib
from tests.support.deploy_env import DeployDir
from tests.test_config_fuzz import BASE, ENV, PATHS, _dump, _set, interesting, values

MAX_DEPLOYS = 20
CANDIDATES = 400  # mutation lists drawn; many are refused by `config check`
# The keys the fixtures leave free, and two the base config does not have.
FREE_PATHS = [p for p in PATHS if p[0] in ("host_dir", "on_failure", "retain")
              or p[:2] in {("app", "env"), ("app", "init"), ("app", "stop_timeout"),
                           ("signing", "verify")}]
FREE_PATHS += [("app", "add_hosts"), ("app", "env", "EXTRA")]
# test_config_fuzz's mutations (its values, often its interesting ones, or a key removed),
# at the free keys.
free_mutation = st.tuples(st.sampled_from(FREE_PATHS), st.one_of(interesting, values),
                          st.booleans())


def candidates() -> list[list[tuple[Any, Any, bool]]]:
    drawn: list[list[tuple[Any, Any, bool]]] = []

    @settings(max_examples=CANDIDATES, derandomize=True, database=None,
              phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(free_mutation, min_size=1, max_size=3))
    def draw(mutations: list[tuple[Any, Any, bool]]) -> None:
        drawn.append(copy.deepcopy(mutations))

    draw()
    return drawn


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for step in path[:-1]:
        if not isinstance(node.get(step), dict):
            node[step] = {}
        node = node[step]
    node[path[-1]] = value


def pin(data: dict[str, Any], d: DeployDir) -> None:
    """Set back what the test host, registry and example app need."""
    assert d.ssh is not None
    for key in ("registry", "notify", "proxy"):
        data.pop(key, None)
    data["service"], data["image"], data["hosts"] = d.service, d.builds.image, [d.ssh.host]
    data["signing"] = {k: v for k, v in (data.get("signing") or {}).items()
                       if k == "verify"} if isinstance(data.get("signing"), dict) else {}
    data["signing"]["public_key"] = str(d.builds.public_key)
    data["ssh"] = {"identity_file": str(d.ssh.identity_file),
                   "known_hosts": str(d.ssh.known_hosts)}
    if not isinstance(data.get("app"), dict):
        data["app"] = {}
    app = data["app"]
    for key in ("publish", "volumes", "command"):
        app.pop(key, None)
    _put(data, ("app", "port"), d.port)
    _put(data, ("app", "network"), "host")
    _put(data, ("app", "secrets"), ["DATABASE_URL"])
    if not isinstance(app.get("env"), dict):
        app["env"] = {}
    app["env"].pop("DATABASE_URL", None)
    app["env"]["PORT"] = str(d.port)
    data["migrate"] = {"command": ["plainsail", "migrate"], "timeout": "60s"}
    data["health"] = {"path": "/health", "body_contains": '"database": "ok"',
                      "attempts": 40, "interval": "250ms", "timeout": "2s"}


def environment(d: DeployDir) -> dict[str, str]:
    """The fuzz test's variables (${HUGE}, ${EMPTY}, ...) and the test database's URL."""
    return {**ENV, **d.env}


def accepted_configs(d: DeployDir) -> list[str]:
    texts: list[str] = []
    seen: set[str] = set()
    for mutations in candidates():
        data = copy.deepcopy(BASE)
        for path, value, delete in mutations:
            _set(data, path, value, delete)
        if not isinstance(data, dict):
            continue
        pin(data, d)
        text = _dump(data, False)
        try:
            cfg = configlib.parse(text, d.path / "plainsail.yml", environment(d))
        except configlib.ConfigError:
            continue
        if repr(cfg) not in seen:  # the same config written another way is no new case
            seen.add(repr(cfg))
            texts.append(text)
        if len(texts) == MAX_DEPLOYS:
            break
    return texts


def test_sampled_accepted_configs_deploy_or_stop_in_preflight(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    configs = accepted_configs(d)
    assert len(configs) >= 10, "too few accepted configs drawn to say anything"
    assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
    running, outcomes = "v1", []
    for text in configs:
        (d.path / "plainsail.yml").write_text(text)
        cfg = configlib.load(d.path / "plainsail.yml", environment(d))
        before = d.containers()
        target = "v2" if running == "v1" else "v1"
        r = d.run("deploy", d.builds.ref(target), "--json", env=environment(d))
        said = f"{text}\n{r.text}"  # type: ignore[attr-defined]
        assert "Traceback" not in said, said
        doc = json.loads(r.out)  # type: ignore[attr-defined]
        outcome = doc["outcome"]
        outcomes.append(outcome)
        if outcome == "succeeded":
            assert r.code == 0, said  # type: ignore[attr-defined]
            running = target
        else:
            # A refusal before anything changed: the running version keeps serving.
            assert outcome == "aborted" and r.code == 1, said  # type: ignore[attr-defined]
            assert d.containers() == before, said
        status, body = d.get()
        assert status == 200 and f'"version": "{running[1]}"' in body, (said, body)
        _remove_state(d, cfg.host_dir)
    assert "succeeded" in outcomes, outcomes


def _remove_state(d: DeployDir, host_dir: str) -> None:
    """The state folder a drawn `host_dir` made on the host (the fixture removes the
    default one)."""
    assert d.ssh is not None
    if host_dir in ("~/.plainsail",):
        return
    home = Path(d.ssh.home)
    root = Path(str(home) + host_dir[1:]) if host_dir.startswith("~") else Path(host_dir)
    if root.is_relative_to(home):
        d.host_run("rm", "-rf", str(root / d.service))
