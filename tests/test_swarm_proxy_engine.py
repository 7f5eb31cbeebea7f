"""The swarm deploy behind a proxy block, through the fake Swarm manager: the global Caddy
service created once and changed only when its image, port or config change, the app tasks
publishing nothing, the gate probing each task by its overlay address from a probe
container, a proxy that does not start, `--dry-run` and `status`.
tests/test_swarm_traffic.py runs the same code on a real 3-node Swarm under load."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from plainsail.deploy.outcomes import ABORTED, RESTORED, SUCCEEDED, UNCHANGED
from plainsail.swarm import morning
from plainsail.swarm import proxy as swproxy
from tests.test_swarm_engine import SWARM, V1, V2, Bench

CADDY = "registry.example.com/caddy:2.10@sha256:" + "c0" * 32
CADDY2 = "registry.example.com/caddy:2.11@sha256:" + "c1" * 32
PROXY = f"proxy:\n  host: api.example.com\n  image: {CADDY}\n  http_port: 8088\n"
START_FIRST = SWARM.replace("stop-first", "start-first")


def bench(tmp: Path, proxy: str = PROXY, swarm: str = SWARM) -> Bench:
    return Bench(tmp, extra=proxy, swarm=swarm, publish=False)


def test_first_deploy_creates_the_global_proxy_and_the_tasks_publish_nothing(
        tmp_path: Path) -> None:
    b = bench(tmp_path)
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    f = b.fake
    conf = json.loads(f.configs[swproxy.config_name(b.cfg)])
    handler = conf["apps"]["http"]["servers"]["plainsail"]["routes"][0]["handle"][0]
    assert handler["dynamic_upstreams"] == {"source": "a", "name": "tasks.api",
                                            "port": "8080", "refresh": "1s"}
    assert handler["load_balancing"]["try_duration"] == "10s"
    assert conf["admin"] == {"disabled": True}
    assert f.proxy is not None and "Global" in f.proxy["Mode"]
    create = next(a for a in f.log if a[:3] == ["docker", "service", "create"]
                  and "api-proxy" in a)
    assert create[create.index("--publish") + 1] == "mode=host,target=80,published=8088"
    assert create[create.index("--network") + 1] == "plainsail"
    assert CADDY in create and "--no-resolve-image" in create
    app = next(a for a in f.log if a[:3] == ["docker", "service", "create"] and "api" in a)
    assert "--publish" not in app
    # The gate asked each task by its overlay address from the probe, which is gone now.
    ips = sorted(t["ip"] for t in f.tasks if t["DesiredState"] == "running")
    assert sorted(u.split("//")[1].split(":")[0] for u in f.probed) == ips
    assert all(u.endswith(":8080/health") for u in f.probed)
    assert not f.probes
    assert s["proxy"] == {"service": "api-proxy", "config": swproxy.config_name(b.cfg),
                          "port": 8088, "changed": True}
    assert all(t["ip"] for t in s["tasks"])


def test_the_proxy_is_left_alone_until_its_image_changes(tmp_path: Path) -> None:
    b = bench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED and s["proxy"]["changed"] is False, s["reason"]
    assert b.fake.proxy_updates == 1
    b2 = bench(tmp_path, proxy=PROXY.replace(CADDY, CADDY2))
    b2.fake = b.fake
    s = b2.deploy(V1)
    assert s["outcome"] == SUCCEEDED and s["proxy"]["changed"] is True, s["reason"]
    update = [a for a in b.fake.log if a[:3] == ["docker", "service", "update"]][-2]
    assert update[-1] == "api-proxy" and update[update.index("--image") + 1] == CADDY2
    assert "--config-add" not in update  # the same Caddy config
    assert "--publish-add" not in update and "--publish-rm" not in update  # the same port
    assert b.fake.proxy is not None
    assert b.fake.proxy["TaskTemplate"]["ContainerSpec"]["Image"] == CADDY2


def test_a_proxy_that_does_not_start_aborts_before_the_service_changes(
        tmp_path: Path) -> None:
    b = bench(tmp_path)
    b.fake.proxy_update_state = "rollback_completed"
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED, s["reason"]
    assert "proxy service api-proxy" in s["reason"] and "rolled back" in s["reason"]
    assert "the service was not changed" in s["reason"]
    assert b.fake.spec is None and b.fake.updates == 0


def test_a_task_failing_the_gate_behind_the_proxy_is_replaced_by_the_recorded_release(
        tmp_path: Path) -> None:
    b = bench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.fake.healthy_image = lambda image: V2.digest not in image
    b.fake.image_client = ""  # no HTTP client in v2: Swarm cannot check it, the gate does
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED, s["reason"]
    assert "health gate failed" in s["reason"] and "answered 500" in s["reason"]
    assert b.fake.image.endswith(V1.digest)
    assert [v["healthy"] for v in s["restore_health"]] == [True, True, True]
    assert not b.fake.probes


def test_a_task_the_manager_cannot_reach_over_the_overlay_is_named_with_the_way_out(
        tmp_path: Path) -> None:
    """A node whose engine has not (re)joined Swarm's gossip: its tasks run but nothing on
    another node reaches them. The gate fails (nothing ran before: the service is removed)
    and the reason names what the nodes need, not only the socket error."""
    b = bench(tmp_path)
    b.fake.unreachable = lambda ip: True
    s = b.deploy(V1)
    assert s["outcome"] == RESTORED, s["reason"]
    assert "No route to host" in s["reason"] and "over the overlay network" in s["reason"]
    assert "7946/tcp and udp" in s["reason"] and "4789/udp" in s["reason"]
    assert b.fake.spec is None
    b.fake.unreachable = lambda ip: False
    b.fake.healthy_image = lambda image: False  # any other failure: no such hint
    s = b.deploy(V1)
    assert s["outcome"] == RESTORED and "overlay" not in s["reason"], s["reason"]


def test_start_first_needs_no_free_node_behind_the_proxy(tmp_path: Path) -> None:
    b = bench(tmp_path, swarm=START_FIRST)
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    without = Bench(tmp_path, swarm=START_FIRST)  # host-mode ports: refused
    s = without.deploy(V1)
    assert s["outcome"] == ABORTED and "start-first" in s["reason"]


def test_dry_run_shows_the_proxy_and_probe_commands(tmp_path: Path) -> None:
    b = bench(tmp_path)
    s = b.deploy(V1, dry_run=True)
    assert s["outcome"] == "dry-run"
    text = "\n".join(b.lines)
    assert "proxy-config: ssh" in text and "docker config create" in text
    assert "proxy: ssh" in text and "--mode global" in text
    assert "probe: ssh" in text and "--entrypoint sleep" in text
    assert "by its overlay address on port 8080" in text
    assert b.fake.proxy is None and not b.fake.configs and b.fake.updates == 0
    b.deploy(V1)
    b.lines.clear()
    b.deploy(V2, dry_run=True)
    text = "\n".join(b.lines)
    assert "proxy-config" in text and "  proxy: " not in text  # nothing to change


def test_no_entry_point_is_refused_in_one_line(tmp_path: Path) -> None:
    b = Bench(tmp_path, publish=False)
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and s["preflight"] is True
    assert "add a proxy block, or set app.publish" in s["reason"]


def test_status_shows_the_proxy_and_each_task_probed_on_the_overlay(tmp_path: Path) -> None:
    b = bench(tmp_path)
    out = morning.status(b.cfg, executor=b.fake.executor())
    assert out["proxy"] is None or out["proxy"]["exists"] is False
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.fake.probed.clear()
    out = morning.status(b.cfg, executor=b.fake.executor())
    px = out["proxy"]
    assert px["exists"] and px["port"] == 8088 and px["nodes"] == 3
    assert [t["state"] for t in px["tasks"]] == ["running"] * 3
    assert [t["health"] for t in out["tasks"]] == ["ok"] * 3
    assert len(b.fake.probed) == 3 and not b.fake.probes
    lines = morning.render_status(b.cfg, out)
    assert any("proxy api-proxy: port 8088 on 3/3 node(s) running" in line for line in lines)


def test_a_redeploy_is_unchanged_unless_the_proxy_changed(tmp_path: Path) -> None:
    b = bench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    assert b.deploy(V1)["outcome"] == UNCHANGED
    b2 = bench(tmp_path, proxy=PROXY.replace("8088", "8089"))
    b2.fake = b.fake
    s = b2.deploy(V1)
    assert s["outcome"] == SUCCEEDED and s["proxy"]["changed"] is True, s["reason"]
    update = next(a for a in reversed(b.fake.log) if a[-1] == "api-proxy"
                  and a[:3] == ["docker", "service", "update"])
    pairs = list(zip(update, update[1:], strict=False))
    assert ("--publish-add", "mode=host,target=80,published=8089") in pairs
    assert ("--publish-rm", "target=80,mode=host") in pairs


def test_moving_from_app_publish_to_the_proxy_unpublishes_the_tasks(tmp_path: Path) -> None:
    b = Bench(tmp_path)  # app.publish 18080, no proxy
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    assert b.fake.spec is not None and len(b.fake.spec["EndpointSpec"]["Ports"]) == 1
    b2 = bench(tmp_path)
    b2.fake = b.fake
    s = b2.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert b.fake.spec["EndpointSpec"]["Ports"] == []
    update = next(a for a in reversed(b.fake.log) if a[-1] == "api"
                  and a[:3] == ["docker", "service", "update"])
    assert "published=18080,target=8080,mode=host" in update


def test_the_probe_container_starts_while_swarm_replaces_the_tasks(tmp_path: Path) -> None:
    """Behind the proxy the gate's probe container is started right after the update is
    asked for, before the wait for Swarm (whose tasks take far longer than its start), and
    removed however the wait ends."""
    b = bench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.fake.log.clear()
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    names = [st["name"] for st in s["steps"]]
    assert names.index("service") < names.index("probe") < names.index("converge") \
        < names.index("gate")
    update = next(i for i, a in enumerate(b.fake.log) if a[:3] == ["docker", "service",
                                                                  "update"])
    probe = next(i for i, a in enumerate(b.fake.log) if a[:2] == ["docker", "run"]
                 and "--detach" in a)
    look = next(i for i, a in enumerate(b.fake.log) if i > update and a[:2] == ["sh", "-c"])
    assert update < probe < look
    b.fake.update_state = "paused"  # the wait ends in a failure: the probe is removed too
    s = b.deploy(V1)
    assert s["outcome"] == RESTORED and "update is paused" in s["reason"], s["reason"]
    assert not b.fake.probes


def test_the_proxy_and_the_probe_wait_out_a_removed_networks_stale_copy(
        tmp_path: Path) -> None:
    """The overlay network removed a moment ago (the manager still shows it): the proxy's
    create on a first deploy, and the probe container on a later one, are refused with
    "network ID not found"; each is run again once the network exists."""
    b = bench(tmp_path)
    b.fake.stale_looks = 2
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert b.fake.joins_refused == 1 and b.fake.proxy_updates == 1
    b.cfg = replace(b.cfg, migrate=None)  # the probe is the first to join the network
    b.fake.swarm_networks.clear()
    b.fake.stale_looks = 1
    b.fake.probed.clear()
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert b.fake.joins_refused == 2 and b.fake.swarm_networks == {"plainsail"}
    assert b.fake.probed and not b.fake.probes  # the gate probed, the probe was removed


def test_a_proxy_left_from_an_earlier_proxy_block_is_named_and_its_port_refused(
        tmp_path: Path) -> None:
    """The proxy block removed: the proxy service keeps running (the load balancer may
    point at it), the deploy says how to remove it; an app.publish on its port, which no
    task could bind, is refused before anything changes."""
    with_proxy = bench(tmp_path)
    assert with_proxy.deploy(V1)["outcome"] == SUCCEEDED
    same_port = Bench(tmp_path, extra="", publish=False)
    same_port.fake = with_proxy.fake
    same_port.cfg = replace(same_port.cfg, app=replace(same_port.cfg.app, publish=8088))
    s = same_port.deploy(V2)
    assert s["outcome"] == ABORTED and "held on every node by the proxy service api-proxy" \
        in s["reason"], s["reason"]
    assert "docker service rm api-proxy" in s["reason"]
    assert with_proxy.fake.image.endswith(V1.digest)
    other = Bench(tmp_path, extra="")  # app.publish 18080
    other.fake = with_proxy.fake
    s = other.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert any("api-proxy (port 8088 on every node) is left" in line for line in other.lines)
    assert other.fake.proxy is not None  # left running


def test_a_proxy_block_without_a_host_name_deploys(tmp_path: Path) -> None:
    """The swarm proxy answers on its port whatever the Host header: no proxy.host."""
    b = bench(tmp_path, proxy=f"proxy:\n  image: {CADDY}\n  http_port: 8088\n")
    assert b.cfg.proxy is not None and b.cfg.proxy.hosts == []
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert b.fake.proxy is not None and s["proxy"]["port"] == 8088
