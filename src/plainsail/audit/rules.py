"""Every audit rule: its id, severity, what it finds and how to fix it (docs/ci.md has an
example of each)."""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"

DOCS = "https://github.com/plainsail/plainsail/blob/main/docs/ci.md"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    area: str  # workflow, dockerfile, config, audit
    title: str
    fix: str


@dataclass
class Finding:
    rule: str
    path: str  # relative to the audited folder, with /
    line: int  # 1-based: the line, job or step concerned
    message: str
    suppressed: str | None = None  # the reason given in the ignore comment
    severity: str = ""
    fix: str = ""

    def __post_init__(self) -> None:
        self.line = max(1, int(self.line))
        rule = RULES.get(self.rule)
        if rule is not None:
            self.severity = self.severity or rule.severity
            self.fix = self.fix or rule.fix
        self.severity = self.severity or ERROR


RULES: dict[str, Rule] = {r.id: r for r in [
    Rule("mutable-tag-deploy", ERROR, "workflow",
         "A deploy uses an image by latest, a branch name, or no tag",
         "deploy the exact build: the tag the build job produced (its commit SHA) plus its "
         "digest, image@sha256:..., handed over as a job output"),
    Rule("mutable-tag-push", ERROR, "workflow",
         "The build pushes no content-derived tag",
         "tag every pushed image with its commit SHA (${{ github.sha }}, docker/metadata-"
         "action type=sha, or plainsail build), additional tags may stay"),
    Rule("no-tag-handoff", ERROR, "workflow",
         "The deploy job does not receive the tag or digest from the build job",
         "make the build job export the tag and digest as outputs and deploy "
         "${{ needs.build.outputs.image-tag }}@${{ needs.build.outputs.image-digest }}"),
    Rule("unsigned-image", ERROR, "workflow",
         "Images are pushed without a signature or attestation",
         "sign what you push (plainsail sign, cosign sign, notation sign) or attest it "
         "(actions/attest-build-provenance), and verify before deploying"),
    Rule("secrets-without-environment", ERROR, "workflow",
         "A job that deploys uses secrets but declares no environment",
         "add `environment: production` to the job and move its secrets into that "
         "environment, protected by required reviewers or branch rules"),
    Rule("untrusted-trigger-with-secrets", ERROR, "workflow",
         "pull_request_target/workflow_run runs untrusted code in a job holding secrets",
         "build untrusted code in an unprivileged pull_request workflow; in the privileged "
         "one check out only the base commit, or guard the job with "
         "github.event.workflow_run.event == 'push' / a same-repository check"),
    Rule("no-health-gate", ERROR, "workflow",
         "The deploy ends without verifying health",
         "end the deploy with a gate that fails the job: plainsail deploy, kubectl rollout "
         "status, helm --wait/--atomic, docker compose up --wait, or a curl --fail retry "
         "loop against a readiness endpoint"),
    Rule("liveness-only-health-check", ERROR, "workflow",
         "The only health check is a liveness endpoint",
         "check an endpoint that exercises the app's dependencies (e.g. /health running a "
         "database query) or check the response body, not just /, /ping or /healthz"),
    Rule("migrations-not-gated", ERROR, "workflow",
         "Migrations are not run before the new version starts, or their failure does "
         "not stop the deploy",
         "run migrations as a step before the new version starts and let their failure "
         "fail the job (no `|| true`, no continue-on-error, `set -e` in ssh scripts), or "
         "use plainsail deploy with migrate.command"),
    Rule("shallow-checkout-deploy", ERROR, "workflow",
         "A plainsail deploy job checks out too little history for the schema gate",
         "check out the whole history in the job that runs plainsail deploy or rollback: "
         "actions/checkout with `fetch-depth: 0`"),
    Rule("long-lived-cloud-credentials", ERROR, "workflow",
         "Static cloud keys where OIDC is available",
         "use OIDC: `permissions: id-token: write` and role-to-assume (AWS), "
         "workload_identity_provider (GCP), client-id/tenant-id/subscription-id (Azure)"),
    Rule("unpinned-base-image", WARNING, "dockerfile",
         "FROM uses a mutable tag and no digest",
         "pin the base image by digest: FROM python:3.12-slim@sha256:<digest> (and let a "
         "bot such as Dependabot or Renovate update it)"),
    Rule("signature-verification-off", WARNING, "config",
         "plainsail.yml turns signature verification off",
         "remove `signing.verify: false` and set signing.public_key to the key that signs "
         "the builds"),
    Rule("liveness-only-health-path", WARNING, "config",
         "health.path is a liveness endpoint",
         "point health.path at an endpoint that checks the app's dependencies, or set "
         "health.body_contains to what a healthy answer says"),
    Rule("migrations-without-migrate", WARNING, "config",
         "A migrations folder exists but plainsail.yml has no migrate",
         "add `migrate: {command: [plainsail, migrate]}` (or your tool's command) so every "
         "deploy applies migrations before the new version starts"),
    Rule("stop-without-notify", WARNING, "config",
         "on_failure: stop without anyone being notified",
         "add a `notify:` webhook, so a deploy left stopped reaches a human"),
    Rule("bad-suppression", ERROR, "audit",
         "An ignore comment without a reason or with an unknown rule",
         "write `# plainsail: ignore[rule-id] why this is safe here`"),
    Rule("unused-suppression", WARNING, "audit",
         "An ignore comment that matches no finding",
         "remove the comment"),
    Rule("unreadable-file", ERROR, "audit",
         "A file the audit must read is not valid YAML, or is too large to read",
         "fix the YAML error at the line shown (or keep the file under the size shown)"),
]}
