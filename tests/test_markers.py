"""The fast suite (`pytest -m "not integration"`) must start no service. A test is marked
integration by conftest when it uses a fixture of SERVICE_FIXTURES; a fixture that starts a
service itself (sshd, a registry, a Docker engine or namespace hosts) must therefore be listed
there or depend on one that is."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import SERVICE_FIXTURES

HERE = Path(__file__).parent
STARTS_A_SERVICE = ("start_sshd", "start_registry", "Registry.start", "hosts.sh", "swarm.sh",
                    "dockerd")


def _fixtures() -> list[tuple[str, str, set[str], str]]:
    """(file, fixture name, its parameters, its source) of every fixture under tests/."""
    found = []
    for path in sorted([*HERE.glob("test_*.py"), *HERE.glob("support/*.py")]):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef):
                continue
            if not any("fixture" in ast.unparse(d) for d in node.decorator_list):
                continue
            params = {a.arg for a in node.args.args}
            found.append((path.name, node.name, params, ast.get_source_segment(text, node) or ""))
    return found


def test_every_fixture_that_starts_a_service_marks_its_tests_integration() -> None:
    fixtures = _fixtures()
    assert any(name == "registry" for _, name, _, _ in fixtures)  # the scan sees fixtures
    unmarked = [f"{file}: {name}" for file, name, params, source in fixtures
                if any(s in source for s in STARTS_A_SERVICE)
                and name not in SERVICE_FIXTURES and not params & SERVICE_FIXTURES]
    assert not unmarked, f"add these to SERVICE_FIXTURES in tests/conftest.py: {unmarked}"
