"""Find what to audit under a path and run every rule on it."""

from __future__ import annotations

from pathlib import Path

from plainsail.audit import Report, files, model, suppress, workflow, workflow_rules, yamldoc
from plainsail.audit.rules import Finding
from plainsail.errors import UsageError
from plainsail.inputs import TooLarge, read_bounded

_SKIP = {".git", "node_modules", ".venv", "venv", "vendor", "site-packages", "__pycache__",
         ".plainsail", ".tox"}


def _rel(p: Path, root: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def _discover(root: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {"workflow": [], "action": [], "dockerfile": [],
                                    "config": []}
    wf_dir = root / ".github" / "workflows"
    if wf_dir.is_dir():
        found["workflow"] = sorted(p for p in wf_dir.iterdir()
                                   if p.suffix in (".yml", ".yaml") and p.is_file())
    for p in sorted(root.rglob("action.y*ml")):
        if p.suffix in (".yml", ".yaml") and not (_SKIP & set(p.relative_to(root).parts)):
            found["action"].append(p)
    for p in sorted(root.rglob("*Dockerfile*")) + sorted(root.rglob("*.dockerfile")):
        if p.is_file() and not (_SKIP & set(p.relative_to(root).parts)) \
                and p not in found["dockerfile"] and not p.name.endswith(".dockerignore"):
            found["dockerfile"].append(p)
    for name in ("plainsail.yml", "plainsail.yaml"):
        if (root / name).is_file():
            found["config"].append(root / name)
    return found


def _kind_of(p: Path) -> str:
    name = p.name.lower()
    if name in ("plainsail.yml", "plainsail.yaml"):
        return "config"
    if "dockerfile" in name:
        return "dockerfile"
    if name in ("action.yml", "action.yaml"):
        return "action"
    if p.suffix in (".yml", ".yaml"):
        return "workflow"
    raise UsageError(f"{p}: not a workflow, action.yml, Dockerfile or plainsail.yml; "
                     "give one of those or a repository folder")


def run(path: Path) -> Report:
    if not path.exists():
        raise UsageError(f"{path} does not exist; give a repository folder or a file")
    if path.is_dir():
        root = path
        found = _discover(root)
    else:
        root = path.parent
        found = {"workflow": [], "action": [], "dockerfile": [], "config": []}
        found[_kind_of(path)].append(path)
        # a workflow given alone: its repository is above .github/workflows
        if path.parent.name == "workflows" and path.parent.parent.name == ".github":
            root = path.parent.parent.parent
    report = Report(str(path))
    if path.is_dir():
        report.notes.extend(_unrun_workflows(root))
    texts: dict[str, str] = {}
    findings: list[Finding] = []

    def read(p: Path, limit: int = yamldoc.MAX_FILE) -> str | None:
        rel = _rel(p, root)
        try:
            text = read_bounded(p, limit).decode("utf-8")
        except TooLarge as exc:
            findings.append(Finding("unreadable-file", rel, 1, f"{exc}; not audited (the "
                                    "audit reads files of at most that size)"))
            return None
        except (OSError, UnicodeDecodeError) as exc:
            report.notes.append(f"{rel}: cannot read it ({exc}); skipped")
            return None
        texts[rel] = text
        report.files.append(rel)
        return text

    mig = files.migrations_folder(root) if path.is_dir() or found["workflow"] else None
    gated_elsewhere = workflow_rules.migrations_gated_in_manifests(root) if mig else False
    used_actions: set[str] = set()
    for p in found["workflow"]:
        text = read(p)
        if text is None:
            continue
        rel = _rel(p, root)
        try:
            wf = workflow.parse(rel, text, root)
        except yamldoc.YamlError as exc:
            findings.append(Finding("unreadable-file", rel, exc.line, f"not valid YAML: "
                                    f"{exc.problem}"))
            continue
        if wf is None:
            report.notes.append(f"{rel}: no jobs; not a workflow")
            continue
        for j in wf.jobs:
            used_actions.update(s.path for s in j.steps if s.path != rel)
        findings.extend(workflow_rules.check(wf, mig is not None, gated_elsewhere))
    for p in found["action"]:
        rel = _rel(p, root)
        text = read(p)
        if text is None or rel in used_actions:
            continue
        try:
            job = workflow.composite(rel, text, root)
        except yamldoc.YamlError as exc:
            findings.append(Finding("unreadable-file", rel, exc.line, f"not valid YAML: "
                                    f"{exc.problem}"))
            continue
        if job is not None:
            empty = workflow.Workflow(rel, yamldoc.YMap(), [job], root, text)
            findings.extend(workflow_rules.step_rules(job, model.Context(empty)))
    for p in found["dockerfile"]:
        text = read(p, files.MAX_DOCKERFILE)
        if text is not None:
            findings.extend(files.dockerfile(_rel(p, root), text))
    for p in found["config"]:
        text = read(p)
        if text is None:
            continue
        rel = _rel(p, root)
        try:
            findings.extend(files.plainsail_yml(rel, text, mig is not None))
        except yamldoc.YamlError as exc:
            findings.append(Finding("unreadable-file", rel, exc.line, f"not valid YAML: "
                                    f"{exc.problem}"))
    findings = _dedupe(findings)
    for rel, text in texts.items():
        findings.extend(suppress.apply(rel, text, findings))
    if mig is not None and path.is_dir():
        findings.extend(_lint(mig, root, report))
    findings.sort(key=lambda f: (f.path, f.line, f.rule))
    report.findings = findings
    return report


def _unrun_workflows(root: Path) -> list[str]:
    """Notes for workflow files in subfolders of .github/workflows, which GitHub never runs."""
    wf_dir = root / ".github" / "workflows"
    if not wf_dir.is_dir():
        return []
    return [f"{_rel(p, root)}: in a subfolder of .github/workflows, which GitHub does not "
            "run; not checked (move it up to run and audit it)"
            for p in sorted(wf_dir.rglob("*.y*ml"))
            if p.parent != wf_dir and p.suffix in (".yml", ".yaml") and p.is_file()]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, int]] = set()
    out: list[Finding] = []
    for f in findings:
        key = (f.rule, f.path, f.line)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _lint(folder: Path, root: Path, report: Report) -> list[Finding]:
    """The migration lint's findings, through its public entry points."""
    try:
        import pglast  # noqa: F401
    except ImportError:
        report.notes.append("migrations not linted: pip install 'plainsail[lint]'")
        return []
    from plainsail.lint.batch import lint_sources
    from plainsail.lint.rules import RULES as LINT_RULES
    from plainsail.lint.sources import collect

    out: list[Finding] = []
    sources = collect([str(folder)])
    report.files.extend(_rel(Path(s.name), root) for s in sources)
    for lf in lint_sources(sources):
        rel = _rel(Path(lf.path), root)
        rule = LINT_RULES.get(lf.rule)
        out.append(Finding(lf.rule, rel, lf.line, lf.message, lf.suppressed,
                           severity=lf.severity, fix=rule.instead if rule else ""))
    return out
