"""Well-known actions: what a step that uses one does, and which of its inputs carry shell
commands, image references or an implied push.

The audit reads a `uses:` step through this table; an action that is not in it is opaque
(its effects are not seen). docs/ci.md lists what is recognised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# kinds
SSH = "ssh"  # runs the script inputs on a host over SSH
COPY = "copy"  # copies files to a host (deploys files, starts nothing by itself)
DEPLOY = "deploy"  # deploys (starts a new version) on a platform
PUBLISH = "publish"  # builds and pushes an image
SIGN = "sign"  # signs or attests what was pushed
GATE = "gate"  # checks health over HTTP
TOOL = "tool"  # its args input is a command line of `tool`
SCRIPT = "script"  # runs JavaScript (actions/github-script)


@dataclass(frozen=True)
class ActionSpec:
    kind: str
    scripts: tuple[str, ...] = ()  # inputs holding shell run on the host
    errexit_input: str = ""  # input that makes the script stop at the first failure
    tool: str = ""  # TOOL: the command the args/command input is a line of
    image_inputs: tuple[str, ...] = ()  # inputs naming the image deployed
    gate_when: str = ""  # DEPLOY: the input that makes the action wait for health
    waits: bool = False  # DEPLOY: the action waits for the new version to be healthy
    starts: bool = True  # DEPLOY/SSH: it (re)starts the app
    builds_input: str = ""  # DEPLOY: the input that makes the platform build at deploy time


ACTIONS: dict[str, ActionSpec] = {
    # scripts over SSH
    "appleboy/ssh-action": ActionSpec(SSH, ("script",), errexit_input="script_stop"),
    "garygrossgarten/github-action-ssh": ActionSpec(SSH, ("command",)),
    "cross-the-world/ssh-pipeline": ActionSpec(SSH, ("script",)),
    "fifsky/ssh-action": ActionSpec(SSH, ("command",)),
    "d3lm/ssh-action": ActionSpec(SSH, ("command",)),
    "d3rhase/ssh-command-action": ActionSpec(SSH, ("command",)),
    "jimcronqvist/action-ssh": ActionSpec(SSH, ("command",)),
    "and-fm/cloudflared-ssh-action": ActionSpec(SSH, ("commands",)),
    "nekiro/ssh-job": ActionSpec(SSH, ("command",)),
    "matheusvanzan/sshpass-action": ActionSpec(SSH, ("run",)),
    "invi5h/ssh-action": ActionSpec(SSH, ("command", "script")),
    "ryand56/r2-upload-action": ActionSpec(COPY),
    # copies, with optional scripts before and after the copy
    "easingthemes/ssh-deploy": ActionSpec(COPY, ("SCRIPT_BEFORE", "SCRIPT_AFTER",
                                                 "script_before", "script_after")),
    "burnett01/rsync-deployments": ActionSpec(COPY),
    "appleboy/scp-action": ActionSpec(COPY),
    "wlixcc/sftp-deploy-action": ActionSpec(COPY, ("ssh_before", "ssh_after")),
    "samkirkland/ftp-deploy-action": ActionSpec(COPY),
    "samkirkland/web-deploy": ActionSpec(COPY),
    # platforms
    "aws-actions/amazon-ecs-deploy-task-definition": ActionSpec(
        DEPLOY, gate_when="wait-for-service-stability"),
    "aws-actions/amazon-ecs-render-task-definition": ActionSpec(
        DEPLOY, image_inputs=("image",), starts=False),
    "google-github-actions/deploy-cloudrun": ActionSpec(DEPLOY, image_inputs=("image",),
                                                        waits=True, builds_input="source"),
    "google-github-actions/deploy-appengine": ActionSpec(DEPLOY, waits=True),
    "azure/webapps-deploy": ActionSpec(DEPLOY, image_inputs=("images",)),
    "azure/container-apps-deploy-action": ActionSpec(DEPLOY, image_inputs=("imagetodeploy",
                                                                           "imageToDeploy")),
    "azure/k8s-deploy": ActionSpec(DEPLOY, image_inputs=("images",), waits=True),
    "deliverybot/helm": ActionSpec(DEPLOY),
    "akhileshns/heroku-deploy": ActionSpec(DEPLOY, gate_when="healthcheck"),
    "dokku/github-action": ActionSpec(DEPLOY),
    "cloudflare/wrangler-action": ActionSpec(DEPLOY),
    "digitalocean/app_action": ActionSpec(DEPLOY, waits=True),
    "azure/functions-container-action": ActionSpec(DEPLOY, image_inputs=("image",)),
    "redhat-actions/oc-new-app": ActionSpec(DEPLOY, image_inputs=("image",)),
    "superfly/flyctl-actions": ActionSpec(TOOL, tool="flyctl"),
    "actions-hub/kubectl": ActionSpec(TOOL, tool="kubectl"),
    "steebchen/kubectl": ActionSpec(TOOL, tool="kubectl"),
    "wahyd4/kubectl-helm-action": ActionSpec(TOOL, tool="sh"),
    # build and push
    "docker/build-push-action": ActionSpec(PUBLISH),
    "docker/bake-action": ActionSpec(PUBLISH),
    "elgohr/publish-docker-github-action": ActionSpec(PUBLISH),
    "mr-smithers-excellent/docker-build-push": ActionSpec(PUBLISH),
    "redhat-actions/push-to-registry": ActionSpec(PUBLISH),
    "aevea/action-kaniko": ActionSpec(PUBLISH),
    "int128/kaniko-action": ActionSpec(PUBLISH),
    "whoan/docker-build-with-cache-action": ActionSpec(PUBLISH),
    "vaultvulp/gp-docker-action": ActionSpec(PUBLISH),
    "macbre/push-to-ghcr": ActionSpec(PUBLISH),
    "jerray/publish-docker-action": ActionSpec(PUBLISH),
    "pmorelli92/github-container-registry-build-push": ActionSpec(PUBLISH),
    "kciter/aws-ecr-action": ActionSpec(PUBLISH),
    # signing and attestation (the cosign installer alone signs nothing)
    "actions/attest-build-provenance": ActionSpec(SIGN),
    "actions/attest": ActionSpec(SIGN),
    "actions/attest-sbom": ActionSpec(SIGN),
    "notaryproject/notation-action": ActionSpec(SIGN),
    "slsa-framework/slsa-github-generator": ActionSpec(SIGN),
    # health checks
    "jtalk/url-health-check-action": ActionSpec(GATE),
    "actions/github-script": ActionSpec(SCRIPT),
}

# Actions with a push input, and the major versions that push when it is not given
# (docker/build-push-action v1 pushed by default; v2 and later do not).
_PUSH_INPUT: dict[str, tuple[int, ...]] = {
    "docker/build-push-action": (1,),
    "docker/bake-action": (),
    "int128/kaniko-action": (),
    "mr-smithers-excellent/docker-build-push": tuple(range(100)),
}
_PUSH_KEYS = ("push", "pushimage", "pushImage")


def action_name(uses: str) -> str:
    """`owner/repo[/path]` without the ref, lowercased."""
    return uses.split("@", 1)[0].strip().lower()


def repo_of(uses: str) -> str:
    return "/".join(action_name(uses).split("/")[:2])


def major_version(uses: str) -> int | None:
    m = re.match(r"v?(\d+)", uses.split("@", 1)[1].strip()) if "@" in uses else None
    return int(m.group(1)) if m else None


def spec_of(uses: str) -> ActionSpec | None:
    if not uses or uses.startswith(("./", "docker://")):
        return None
    name = action_name(uses)
    spec = ACTIONS.get(name) or ACTIONS.get(repo_of(uses))
    if spec is not None:
        return spec
    repo = repo_of(uses)
    if repo.endswith("/build-push-action"):
        return ACTIONS["docker/build-push-action"]  # forks keep its inputs
    for tool in ("kubectl", "helm", "flyctl"):
        if tool in repo:
            return ActionSpec(TOOL, tool=tool)
    if "health" in repo or "http-request" in repo or "wait-for-url" in repo \
            or "wait-on" in repo:
        return ActionSpec(GATE)
    if re.search(r"(^|[-/])ssh([-/]|$)|ssh-action|remote-ssh", repo):
        return ActionSpec(SSH, ("script", "command", "commands", "run", "cmd"))
    return None


def pushes(uses: str, inputs: dict[str, str]) -> bool:
    """Whether a PUBLISH action pushes, given its inputs (as text)."""
    repo = repo_of(uses)
    if repo.endswith("/build-push-action"):
        repo = "docker/build-push-action"
    default_push = _PUSH_INPUT.get(repo)
    if default_push is None:
        return True  # these actions always push
    value = next((inputs[k] for k in _PUSH_KEYS if k in inputs), None)
    outputs = inputs.get("outputs", "")
    if "type=registry" in outputs or "push=true" in outputs:
        return True
    if value is None or not value.strip():
        return (major_version(uses) or 0) in default_push
    v = value.strip().lower()
    return v not in ("false", "no", "0", "off")
