"""A fake Swarm manager for unit tests of the swarm deploy: the fake host's state folder,
lock and migration container (tests/support/fakehost.py) plus an in-memory Swarm: nodes,
one service's spec and tasks, Docker secrets and configs. It understands exactly the argv
lists of `plainsail.swarm.service`; an update converges at once, unless `update_state`
says Swarm paused it. The integration tests run the same code on a real 3-node Swarm."""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from plainsail.swarm import healthcheck
from plainsail.swarm import service as svc
from tests.support.fakehost import SCRIPTS, FakeExecutor, FakeHost

# The swarm's fixed scripts, by the step name faults are keyed by.
SCRIPTS[svc.TASKS_SCRIPT] = "swarm-tasks"
SCRIPTS[svc.nodes_argv()[2]] = "swarm-nodes"

_task_ids = itertools.count(1)

NO_VALUE = frozenset({"--detach", "--no-resolve-image", "--with-registry-auth", "--init",
                      "--force", "-d", "--no-healthcheck"})
UNHEALTHY = "task: non-zero exit (137): dockerexec: unhealthy container"
HEALTH_FLAGS = {"--health-interval": "Interval", "--health-timeout": "Timeout",
                "--health-start-period": "StartPeriod"}


class FakeSwarm(FakeHost):
    """A manager node of a 3-node Swarm."""

    def __init__(self) -> None:
        super().__init__("ssh://deploy@manager-1")
        self.nodes = {f"node{n}": {"hostname": f"pss{n}", "address": f"10.232.{n}.2"}
                      for n in (1, 2, 3)}
        self.spec: dict[str, Any] | None = None  # the service's Spec, as Docker shows it
        self.tasks: list[dict[str, Any]] = []
        self.update_status: dict[str, Any] | None = None
        self.secrets: dict[str, str] = {}  # name -> value
        self.configs: dict[str, str] = {}
        self.swarm_networks: set[str] = set()
        # How many more times `docker network inspect` finds a removed network (the
        # manager's stale copy) while commands that join it fail with "network ID not found".
        self.stale_looks = 0
        self.joins_refused = 0  # commands refused because the network did not exist
        # The HTTP client a container of the image finds ("" none; healthcheck.CLIENTS).
        self.image_client = "python3"
        self.network = "plainsail"  # the service's overlay network
        self.image_config: dict[str, Any] = {"Entrypoint": None, "Cmd": ["/bin/app", "serve"]}
        # Set to "paused" (etc.): the next create/update does not converge.
        self.update_state = ""
        # Is a task of this image healthy? Default: yes.
        self.healthy_image: Callable[[str], bool] = lambda image: True
        self.updates = 0  # docker service create/update commands run
        # True: the next update leaves the old tasks running and the last UpdateStatus as
        # it was, as the manager does in the moment before it starts an update.
        self.lazy = False
        self.pending = False
        # Nodes whose engine stopped: shown "down", no task placed on them; a task that
        # finds no node of its own (one per node: the host-mode port) stays pending.
        self.down: set[str] = set()
        # The proxy service (a proxy block): its spec, tasks, and what Swarm does with its
        # next create/update ("" runs it, "rollback_completed" rolls it back); the probe
        # containers running and the URLs they were asked.
        self.proxy: dict[str, Any] | None = None
        self.proxy_tasks: list[dict[str, Any]] = []
        self.proxy_update_state = ""
        self.proxy_status: dict[str, Any] | None = None
        self.proxy_updates = 0
        self.probes: set[str] = set()
        self.probed: list[str] = []
        self.unreachable: Callable[[str], bool] = lambda ip: False  # overlay address

    def executor(self, secrets: Sequence[Any] = ()) -> FakeSwarmExecutor:
        ex = FakeSwarmExecutor(self, secrets)
        self.executors.append(ex)
        return ex

    @property
    def image(self) -> str:
        return str(self.spec["TaskTemplate"]["ContainerSpec"]["Image"]) if self.spec else ""

    def container_spec(self) -> dict[str, Any]:
        assert self.spec is not None
        spec: dict[str, Any] = self.spec["TaskTemplate"]["ContainerSpec"]
        return spec


class FakeSwarmExecutor(FakeExecutor):
    fake: FakeSwarm

    def http_get(self, host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
        task = next((t for t in self.fake.tasks if t["address"] == host
                     and t["Status"]["State"] == "running"), None)
        if task is None:
            raise ConnectionRefusedError("connection refused")
        image = task["Spec"]["ContainerSpec"]["Image"]
        return (200, '{"status": "ok"}') if self.fake.healthy_image(image) else (
            500, '{"database": "down"}')

    def _do(self, argv: list[str], stdin: str | None) -> tuple[int, str, str]:
        f = self.fake
        if argv[:2] == ["docker", "run"] and healthcheck.CLIENT_SCRIPT in argv:
            return (0, f.image_client + "\n", "") if f.image_client else (1, "", "")
        joins = argv[:2] == ["docker", "run"] or argv[1:3] in (["service", "create"],
                                                              ["service", "update"])
        if joins and "--network" in argv and argv[argv.index("--network") + 1] \
                not in f.swarm_networks:
            f.joins_refused += 1
            return 125 if argv[1] == "run" else 1, "", (
                ("docker: " if argv[1] == "run" else "") + "Error response from daemon: "
                "network 7jb1yx0rtmcxkkmoae6kbpnvm not found\n\n"
                "Run 'docker run --help' for more information")
        if self._is_proxy(argv):
            return self._proxy_cmd(argv, stdin)
        if argv[:2] == ["docker", "run"] and "sleep" in argv:  # a probe container
            f.probes.add(argv[argv.index("--name") + 1])
            return 0, "probe1", ""
        if argv[:2] == ["docker", "exec"] and argv[2] in f.probes:
            return self._probe(next(a for a in argv if a.startswith("http://")))
        if argv[:3] == ["docker", "rm", "--force"] and argv[3] in f.probes:
            f.probes.discard(argv[3])
            return 0, argv[3], ""
        if argv[1:5] == ["service", "ps", "--no-trunc", "--filter"]:  # failed tasks
            return 0, "".join(f'"{t["Status"]["Err"]}"\n' for t in f.tasks  # as Docker
                              if t["DesiredState"] == "shutdown" and t["Status"]["Err"]), ""
        if argv[:2] == ["sh", "-c"] and argv[2] == svc.TASKS_SCRIPT:
            if f.spec is None:
                return 1, "", f"Error: no such service: {argv[4]}"
            wanted = [t for t in f.tasks if t["DesiredState"] == "running"]
            out = json.dumps(f.update_status) + "\n" + (json.dumps(wanted) if wanted else "")
            if f.pending:
                f.pending = False
                self._converge(created=False)
            return 0, out, ""
        if argv[:2] == ["sh", "-c"] and "docker node inspect" in argv[2]:
            return 0, json.dumps([
                {"ID": k, "Description": {"Hostname": v["hostname"]},
                 "Status": {"Addr": v["address"],
                            "State": "down" if k in f.down else "ready"},
                 "Spec": {"Availability": "active", "Role": "manager" if k == "node1"
                          else "worker"}} for k, v in f.nodes.items()]), ""
        if argv[:2] != ["docker", "run"] and len(argv) > 1 and argv[0] == "docker":
            handled = self._swarm(argv, stdin)
            if handled is not None:
                return handled
        if argv[0] == "rm":
            f.files.pop(argv[-1], None)
            return 0, "", ""
        return super()._do(argv, stdin)

    @staticmethod
    def _is_proxy(argv: list[str]) -> bool:
        if argv[:2] == ["sh", "-c"] and argv[2] == svc.TASKS_SCRIPT:
            return argv[4].endswith("-proxy")
        if argv[:2] == ["docker", "service"] and argv[2] in ("inspect", "update", "rm"):
            return argv[-1].endswith("-proxy")
        if argv[:3] == ["docker", "service", "create"]:
            return argv[argv.index("--name") + 1].endswith("-proxy")
        return False

    def _proxy_cmd(self, argv: list[str], stdin: str | None) -> tuple[int, str, str]:
        f = self.fake
        if argv[:2] == ["sh", "-c"]:
            if f.proxy is None:
                return 1, "", f"Error: no such service: {argv[4]}"
            status = f.proxy_status if f.proxy_status else (
                {"State": "completed"} if f.proxy_updates > 1 else None)
            return 0, json.dumps(status) + "\n" + json.dumps(f.proxy_tasks), ""
        if argv[2] == "inspect":
            if f.proxy is None:
                return 1, "[]", f"Status: Error: no such service: {argv[-1]}, Code: 1"
            return 0, json.dumps([{"ID": "px1", "Spec": f.proxy}]), ""
        if argv[2] == "rm":
            f.proxy, f.proxy_tasks = None, []
            return 0, argv[-1], ""
        opts, rest = self._options(argv[3:])
        if argv[2] == "create":
            if f.proxy is not None:
                return 1, "", "Error response from daemon: rpc error: name conflicts"
            f.proxy = {"Name": dict(opts)["--name"], "Labels": {}, "Mode": {"Global": {}},
                       "EndpointSpec": {"Ports": []},
                       "TaskTemplate": {"ContainerSpec": {"Image": "", "Configs": []}}}
        elif f.proxy is None:
            return 1, "", f"Error: no such service: {rest[-1]}"
        c = f.proxy["TaskTemplate"]["ContainerSpec"]
        for key, value in opts:
            if key in ("--label", "--label-add"):
                k, _, v = value.partition("=")
                f.proxy["Labels"][k] = v
            elif key in ("--config", "--config-add"):
                source = value.split(",")[0].split("=")[1]
                if source not in f.configs:
                    return 1, "", f"config not found: {source}"
                c["Configs"].append({"ConfigName": source})
            elif key == "--config-rm":
                c["Configs"] = [x for x in c["Configs"] if x["ConfigName"] != value]
            elif key in ("--publish", "--publish-add"):
                published = int(dict(p.split("=", 1) for p in value.split(","))["published"])
                f.proxy["EndpointSpec"]["Ports"].append({"PublishedPort": published})
            elif key == "--publish-rm":
                f.proxy["EndpointSpec"]["Ports"] = []
        c["Image"] = rest[0] if argv[2] == "create" else dict(opts).get("--image", c["Image"])
        f.proxy_updates += 1
        state = "running"
        f.proxy_status = None
        if f.proxy_update_state:
            f.proxy_status = {"State": f.proxy_update_state, "Message": "update rolled back"}
            state, f.proxy_update_state = "rejected", ""
        f.proxy_tasks = [{"ID": f"ptask{next(_task_ids):04d}", "NodeID": node,
                          "DesiredState": "running", "Status": {"State": state, "Err": ""},
                          "Spec": {"ContainerSpec": {"Image": c["Image"]}}}
                         for node in f.nodes]
        return 0, "px1", ""

    def _probe(self, url: str) -> tuple[int, str, str]:
        """One GET from a probe container, by a task's overlay address."""
        f = self.fake
        f.probed.append(url)
        ip = url.split("//")[1].split(":")[0]
        task = next((t for t in f.tasks if t["ip"] == ip
                     and t["Status"]["State"] == "running"), None)
        if task is None:
            return 1, "", "[Errno 111] Connection refused"
        if f.unreachable(ip):  # the probe's engine knows no way to it (no gossip yet)
            return 1, "", "[Errno 113] No route to host"
        image = task["Spec"]["ContainerSpec"]["Image"]
        return (0, '200\n{"status": "ok"}', "") if f.healthy_image(image) else (
            0, '500\n{"database": "down"}', "")

    def _swarm(self, argv: list[str], stdin: str | None) -> tuple[int, str, str] | None:
        f = self.fake
        cmd = argv[1:3]
        if argv[1] == "info":
            return 0, "active true\n", ""
        if cmd == ["image", "inspect"]:
            return 0, json.dumps(f.image_config), ""
        if cmd == ["network", "inspect"]:
            net = argv[-1]
            if f.stale_looks and net not in f.swarm_networks:
                f.stale_looks -= 1
                return 0, "overlay swarm", ""
            return (0, "overlay swarm", "") if net in f.swarm_networks else (
                1, "", f"Error: No such network: {net}")
        if cmd == ["network", "create"]:
            f.swarm_networks.add(argv[-1])
            f.networks.add(argv[-1])
            return 0, "n1", ""
        if cmd == ["config", "inspect"]:
            return (0, "c1", "") if argv[-1] in f.configs else (1, "", "no such config")
        if cmd == ["config", "create"]:
            f.configs[argv[-2]] = stdin or ""
            return 0, "c1", ""
        if cmd == ["secret", "create"]:
            name = argv[-2]
            if name in f.secrets:
                return 1, "", f"Error response from daemon: secret {name} already exists"
            f.secrets[name] = stdin or ""
            return 0, "s1", ""
        if cmd == ["secret", "ls"]:
            return 0, "".join(n + "\n" for n in sorted(f.secrets)), ""
        if cmd == ["secret", "rm"]:
            used = set(self._used_secrets())
            for n in argv[3:]:
                if n not in used:
                    f.secrets.pop(n, None)
            return 0, "", ""
        if cmd == ["service", "inspect"]:
            if f.spec is None:
                return 1, "[]", f"Status: Error: no such service: {argv[-1]}, Code: 1"
            return 0, json.dumps([{"ID": "svc1", "Spec": f.spec,
                                   "UpdateStatus": f.update_status}]), ""
        if cmd == ["service", "create"]:
            return self._create(argv[3:])
        if cmd == ["service", "update"]:
            return self._update(argv[3:])
        if cmd == ["service", "rm"]:
            f.spec, f.tasks, f.update_status = None, [], None
            return 0, argv[-1], ""
        if argv[1] == "inspect" and "{{.Status.State}}" in argv:
            task = next((t for t in f.tasks if t["ID"] == argv[-1]), None)
            return (0, task["Status"]["State"], "") if task else (1, "", "no such task")
        return None

    def _used_secrets(self) -> list[str]:
        if self.fake.spec is None:
            return []
        return [s["SecretName"] for s in self.fake.container_spec().get("Secrets") or []]

    @staticmethod
    def _options(args: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
        opts, i = [], 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] in NO_VALUE:
                opts.append((args[i], ""))
                i += 1
            else:
                opts.append((args[i], args[i + 1]))
                i += 2
        return opts, args[i:]

    def _create(self, args: list[str]) -> tuple[int, str, str]:
        f = self.fake
        opts, rest = self._options(args)
        if f.spec is not None:
            return 1, "", "Error response from daemon: rpc error: name conflicts"
        for key, value in opts:
            if key == "--secret" and value.split(",")[0].split("=")[1] not in f.secrets:
                return 1, "", "secret not found"
        f.network = dict(opts)["--network"]
        f.spec = {"Name": dict(opts)["--name"], "Labels": {}, "TaskTemplate": {
            "ContainerSpec": {"Image": rest[0], "Args": rest[1:], "Env": [], "Secrets": []}},
            "Mode": {"Replicated": {"Replicas": int(dict(opts)["--replicas"])}},
            "EndpointSpec": {"Mode": "dnsrr", "Ports": []}}
        self._apply(opts)
        f.updates += 1
        self._converge(created=True)
        return 0, "svc1", ""

    def _update(self, args: list[str]) -> tuple[int, str, str]:
        f = self.fake
        opts, rest = self._options(args)
        if f.spec is None:
            return 1, "", f"Error: no such service: {rest[-1]}"
        self._apply(opts)
        f.updates += 1
        self._converge(created=False)
        return 0, rest[-1], ""

    def _apply(self, opts: list[tuple[str, str]]) -> None:
        f = self.fake
        assert f.spec is not None
        c = f.container_spec()
        labels = f.spec["Labels"]
        for key, value in opts:
            if key in ("--label", "--label-add"):
                k, _, v = value.partition("=")
                labels[k] = v
            elif key == "--label-rm":
                labels.pop(value, None)
            elif key in ("--container-label", "--container-label-add"):
                k, _, v = value.partition("=")
                c.setdefault("Labels", {})[k] = v
            elif key == "--container-label-rm":
                c.setdefault("Labels", {}).pop(value, None)
            elif key in ("--env", "--env-add"):
                c["Env"] = [e for e in c["Env"] if e.split("=")[0] != value.split("=")[0]]
                c["Env"].append(value)
            elif key == "--env-rm":
                c["Env"] = [e for e in c["Env"] if e.split("=")[0] != value]
            elif key in ("--secret", "--secret-add"):
                parts = dict(p.split("=", 1) for p in value.split(","))
                c["Secrets"].append({"SecretName": parts["source"],
                                     "File": {"Name": parts["target"]}})
            elif key == "--secret-rm":
                c["Secrets"] = [s for s in c["Secrets"] if s["SecretName"] != value]
            elif key == "--image":
                c["Image"] = value
            elif key in ("--publish", "--publish-add", "--publish-rm"):
                port = dict(p.split("=", 1) for p in value.split(","))
                entry = {"Protocol": "tcp", "TargetPort": int(port["target"]),
                         "PublishedPort": int(port["published"]), "PublishMode": "host"}
                ports = f.spec["EndpointSpec"]["Ports"]
                if key == "--publish-rm":
                    ports[:] = [x for x in ports if x != entry]
                else:
                    ports.append(entry)
            elif key in ("--config", "--config-add"):
                parts = dict(p.split("=", 1) for p in value.split(","))
                if parts["source"] not in f.configs:
                    raise AssertionError(f"config not found: {parts['source']}")
                c.setdefault("Configs", []).append({"ConfigName": parts["source"],
                                                    "File": {"Name": parts["target"]}})
            elif key == "--config-rm":
                c["Configs"] = [x for x in c.get("Configs") or [] if x["ConfigName"] != value]
            elif key == "--no-healthcheck":
                c["Healthcheck"] = {"Test": ["NONE"]}
            elif key == "--health-cmd":
                hc = c.setdefault("Healthcheck", {})
                hc["Test"] = ["CMD-SHELL", value] if value else None
            elif key in HEALTH_FLAGS:
                c.setdefault("Healthcheck", {})[HEALTH_FLAGS[key]] = int(
                    float(value.rstrip("s")) * 1e9)
            elif key == "--health-retries":
                c.setdefault("Healthcheck", {})["Retries"] = int(value)
            elif key == "--args":
                c["Args"] = shlex.split(value)
            elif key == "--replicas":
                f.spec["Mode"]["Replicated"]["Replicas"] = int(value)

    def _converge(self, created: bool) -> None:
        f = self.fake
        assert f.spec is not None
        image = f.image
        if f.update_state:
            f.update_status = {"State": f.update_state, "Message": "update paused due to "
                               "failure or early termination of task x"}
            f.update_state = ""
            return
        if f.lazy:  # the update is accepted; the next look at the tasks sees it done
            f.lazy, f.pending = False, True
            return
        test = (f.container_spec().get("Healthcheck") or {}).get("Test") or []
        if any(healthcheck.HEALTH_PATH in str(x) for x in test) and not f.healthy_image(image):
            # Swarm's health check fails: the new task never counts as running; Swarm
            # stops it as unhealthy and pauses an update (a new service's task restarts).
            number = next(_task_ids)
            f.tasks.append({"ID": f"task{number:04d}", "NodeID": "node1", "ip": "",
                            "DesiredState": "shutdown", "address": "",
                            "Status": {"State": "failed", "Err": UNHEALTHY},
                            "Spec": {"ContainerSpec": {"Image": image, "Labels": dict(
                                f.container_spec().get("Labels") or {})}}})
            if not created:
                f.update_status = {"State": "paused", "Message": "update paused due to "
                                   f"failure or early termination of task task{number:04d}"}
            return
        f.update_status = None if created else {"State": "completed",
                                                "Message": "update completed"}
        replicas = f.spec["Mode"]["Replicated"]["Replicas"]
        for t in f.tasks:
            t["DesiredState"] = "shutdown"
            t["Status"]["State"] = "shutdown"
        nodes = [n for n in f.nodes if n not in f.down]
        for n in range(replicas):
            node = nodes[n % len(nodes)] if not f.down else nodes[n] if n < len(nodes) else ""
            if not node:
                f.update_status = {"State": "updating", "Message": "update in progress"}
            number = next(_task_ids)
            ip = f"10.0.{number // 250}.{number % 250 + 2}" if node else ""
            f.tasks.append({"ID": f"task{number:04d}", "NodeID": node, "ip": ip,
                            "NetworksAttachments": [{"Network": {"Spec": {
                                "Name": f.network}}, "Addresses": [f"{ip}/24"]}] if node
                            else [],
                            "DesiredState": "running",
                            "address": f.nodes[node]["address"] if node else "",
                            "Status": {"State": "running", "Err": ""} if node else {
                                "State": "pending", "Err": "no suitable node (host-mode "
                                f"port already in use on {len(nodes)} nodes)"},
                            "Spec": {"ContainerSpec": {
                                "Image": image,
                                "Labels": dict(f.container_spec().get("Labels") or {})}}})
