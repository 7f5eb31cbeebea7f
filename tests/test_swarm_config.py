"""`target: swarm`: the swarm block is validated strictly, and what Swarm cannot do is refused
with one line naming the key; commands that act on hosts refuse a swarm config."""

from __future__ import annotations

from pathlib import Path

import pytest

from plainsail.config import model as configlib
from tests.test_config import parse, problems

BASE = "service: api\nimage: 127.0.0.1:5000/acme/api\ntarget: swarm\n"
FULL = BASE + """\
swarm:
  manager: ssh://deploy@manager-1
  replicas: 3
  placement: ["node.role == worker", "node.labels.zone!=b"]
  update: {parallelism: 2, delay: 5s, order: stop-first}
  resources:
    limits: {cpus: 0.5, memory: 256M}
    reservations: {cpus: "0.25", memory: 128MiB}
"""


def test_full_block_parses_and_hosts_default_to_the_manager() -> None:
    cfg = parse(FULL)
    sw = cfg.swarm
    assert cfg.target == "swarm" and sw is not None
    assert cfg.hosts == ["ssh://deploy@manager-1"]
    assert sw.replicas == 3
    assert sw.placement == ["node.role==worker", "node.labels.zone!=b"]
    assert (sw.update.parallelism, sw.update.delay, sw.update.order) == (2, 5.0, "stop-first")
    assert sw.resources.limits.cpus == 0.5 and sw.resources.limits.memory == 256 * 1024**2
    assert sw.resources.reservations.memory == 128 * 1024**2
    assert cfg.swarm_network == configlib.SWARM_NETWORK
    assert configlib.to_display(cfg)["app"]["network"] == configlib.SWARM_NETWORK


def test_defaults() -> None:
    cfg = parse(BASE + "swarm: {manager: local}\n")
    assert cfg.swarm == configlib.SwarmConfig(manager="local")
    assert cfg.swarm.update.order == "start-first" and cfg.swarm.replicas == 1
    assert parse(BASE.replace("target: swarm\n", "")).target == "hosts"


@pytest.mark.parametrize(("extra", "needle"), [
    ("registry: {mode: host}\n", "registry.mode: host cannot serve a swarm"),
    ("app: {network: host}\n", "app.network: host is not available to a swarm service"),
    ("app: {network: none}\n", "app.network: none is not available"),
    ("rollout: {batch: 1}\n", "rollout: is for target hosts"),
    ("on_failure: stop\n", "on_failure: stop is not available with target swarm"),
    ("hosts: [ssh://deploy@web-2]\n", "hosts: with target swarm plainsail reaches"),
    ("hosts: [ssh://deploy@manager-1, ssh://deploy@web-2]\n", "list just it"),
])
def test_what_swarm_cannot_do_is_one_line(extra: str, needle: str) -> None:
    # (mode host needs an image without a registry host; give it one, so only swarm objects)
    text = FULL.replace("127.0.0.1:5000/acme/api", "acme/api") if "mode: host" in extra else FULL
    found = problems(text + extra)
    assert len(found) == 1 and needle in found[0], found
    assert "\n" not in found[0]


CADDY = "caddy:2.10@sha256:" + "c0" * 32
PROXY = f"proxy:\n  host: api.example.com\n  image: {CADDY}\n"


def test_a_proxy_block_serves_plain_http_on_every_node() -> None:
    cfg = parse(FULL + PROXY + "  http_port: 8088\n  tls: off\n")
    assert cfg.proxy is not None and cfg.proxy.http_port == 8088
    cfg = parse(FULL + PROXY)  # tls left out: off, TLS ends at the load balancer
    assert cfg.proxy is not None and cfg.proxy.tls.mode == "off" and not cfg.proxy.tls.enabled


def test_a_swarm_proxy_needs_no_host_name() -> None:
    """The swarm proxy answers on its port whatever the Host header: proxy.host may be left
    out there (with target hosts it is what the proxy routes on, and stays required)."""
    cfg = parse(FULL + f"proxy:\n  image: {CADDY}\n  http_port: 8088\n")
    assert cfg.proxy is not None and cfg.proxy.hosts == [] and cfg.proxy.http_port == 8088
    hosts_target = FULL.replace("target: swarm\n", "").split("swarm:")[0]
    found = problems(hosts_target + f"proxy:\n  image: {CADDY}\n")
    assert len(found) == 1 and "exactly one of host" in found[0], found
    found = problems(FULL + f"proxy:\n  host: a.test\n  hosts: [b.test]\n  image: {CADDY}\n")
    assert len(found) == 1 and "exactly one of host" in found[0], found


@pytest.mark.parametrize(("extra", "needle"), [
    ("  tls: internal\n", "proxy.tls: with target swarm TLS ends at your load balancer"),
    ("  path: /api\n", "proxy.path: is for target hosts"),
    ("  https_port: 8443\n", "proxy.https_port: is for target hosts"),
    ("  network: edge\n", "proxy.network: is for target hosts"),
    ("app: {publish: 8080}\n", "app.publish: with a proxy nothing is published"),
    ("traffic_gate: {window: 30s}\n", "traffic_gate: is not available with target swarm"),
])
def test_what_the_swarm_proxy_refuses_is_one_line(extra: str, needle: str) -> None:
    found = problems(FULL + PROXY + extra)
    assert len(found) == 1 and needle in found[0], found
    assert "\n" not in found[0]


def test_hosts_naming_only_the_manager_is_accepted() -> None:
    cfg = parse(FULL + "hosts: [ssh://deploy@manager-1]\n")
    assert cfg.hosts == ["ssh://deploy@manager-1"]


@pytest.mark.parametrize(("block", "needle"), [
    ("swarm: {replicas: 2}", "swarm.manager: is required"),
    ("swarm: {manager: local, replicas: 0}", "swarm.replicas: 0 is out of range"),
    ("swarm: {manager: local, replica: 2}", "did you mean replicas?"),
    ("swarm: {manager: local, placement: [node.role==boss]}", "manager or worker"),
    ("swarm: {manager: local, placement: [zone=a]}", "is not a placement constraint"),
    ("swarm: {manager: local, placement: [node.role==worker, node.role == worker]}",
     "listed twice"),
    ("swarm: {manager: local, update: {order: blue-green}}", "not one of: start-first"),
    ("swarm: {manager: local, update: {parallelism: -1}}", "out of range"),
    ("swarm: {manager: local, update: {delay: 2h}}", "swarm.update.delay"),
    ("swarm: {manager: local, resources: {limits: {memory: 1M}}}", "at least 6M"),
    ("swarm: {manager: local, resources: {limits: {memory: lots}}}", "a memory size"),
    ("swarm: {manager: local, resources: {limits: {cpus: 0}}}", "more than 0"),
    ("swarm: {manager: local, resources: {limits: {cpus: 1e3}}}", "a number of CPUs"),
    ("swarm: {manager: local, resources: {limits: {cpus: 1}, reservations: {cpus: 2}}}",
     "reservations.cpus: is more than limits.cpus"),
    ("swarm: {manager: 'ssh://a b'}", "swarm.manager"),
])
def test_swarm_block_is_strict(block: str, needle: str) -> None:
    found = problems(BASE + block + "\n")
    assert any(needle in p for p in found), found


def test_target_and_block_go_together() -> None:
    assert "needs a swarm block" in problems(BASE)[0]
    assert "swarm: is used only with target: swarm" in problems(
        "service: api\nimage: acme/api\nswarm: {manager: local}\n")[0]
    assert "is not one of: hosts, swarm" in problems(BASE.replace("swarm\n", "k8s\n"))[0]


def test_config_check_accepts_and_host_commands_refuse_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from plainsail import cli

    (tmp_path / "plainsail.yml").write_text(FULL)
    config = ["-c", str(tmp_path / "plainsail.yml")]
    assert cli.main(["config", "check", "--json", *config]) == 0
    assert '"target": "swarm"' in capsys.readouterr().out
    for command in (["drill", "--backup"], ["maintenance", "on"], ["proxy", "status"]):
        assert cli.main([*command, *config]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "does not support the swarm target yet" in err[0], err

