"""No library module writes to the terminal.

The CLI layer is the only code that may: `plainsail/cli.py`, `plainsail/__main__.py`, the
modules under `plainsail/commands/` and the output boundary `plainsail/output.py` (plus a
module's own `if __name__ == "__main__":` block, which is a command line of its own).
Everything else tells the person what happens through the reporter it is given
(`plainsail.progress.Progress`) or returns it to its caller.

What counts as writing to the terminal, outside that layer:
- a call of `print`;
- any use of `sys.stdout`, `sys.stderr` (or their `__stdout__`/`__stderr__`) other than
  flushing them;
- `os.write` to file descriptor 1 or 2;
- importing `plainsail.output` (its functions write to the terminal);
- logging at warning level or above (with no handler configured, Python's last-resort
  handler prints it to stderr; debug and info lines reach a terminal only through the
  handler the CLI sets up for --verbose);
- starting a process that inherits the terminal (a `subprocess` call without
  `capture_output=True` or both `stdout=` and `stderr=`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "plainsail"

CLI_LAYER = ("cli.py", "__main__.py", "output.py", "commands/")

STREAMS = {"stdout", "stderr", "__stdout__", "__stderr__"}
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
LOUD_LOGGING = {"warning", "warn", "error", "exception", "critical"}


def _library_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py")
                  if not str(p.relative_to(SRC)).startswith(CLI_LAYER))


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _sys_stream(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in STREAMS
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def terminal_writes(source: str, name: str = "<module>") -> list[str]:
    """Where `source` writes to the terminal: `name:line: what` for each place."""
    tree = ast.parse(source)
    for node in list(tree.body):
        if _is_main_guard(node):
            tree.body.remove(node)
    flushed: set[int] = set()  # sys.stdout in `sys.stdout.flush()` or `for s in (sys.stdout,...)`
    found: list[str] = []

    def hit(node: ast.AST, what: str) -> None:
        found.append(f"{name}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "flush" and _sys_stream(node.func.value):
            flushed.add(id(node.func.value))
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple | ast.List) \
                and all(_sys_stream(e) for e in node.iter.elts) \
                and all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                        and isinstance(s.value.func, ast.Attribute)
                        and s.value.func.attr == "flush" for s in node.body):
            flushed.update(id(e) for e in node.iter.elts)
    for node in ast.walk(tree):
        if _sys_stream(node) and id(node) not in flushed:
            hit(node, f"uses sys.{node.attr}")  # type: ignore[attr-defined]
        elif isinstance(node, ast.ImportFrom) and node.module == "plainsail.output":
            hit(node, "imports plainsail.output")
        elif isinstance(node, ast.Import) \
                and any(a.name == "plainsail.output" for a in node.names):
            hit(node, "imports plainsail.output")
        elif isinstance(node, ast.ImportFrom) and node.module == "plainsail" \
                and any(a.name == "output" for a in node.names):
            hit(node, "imports plainsail.output")
        elif isinstance(node, ast.Call):
            func = node.func
            keywords = {k.arg for k in node.keywords}
            if isinstance(func, ast.Name) and func.id == "print":
                hit(node, "calls print")
            elif isinstance(func, ast.Attribute) and func.attr == "write" \
                    and isinstance(func.value, ast.Name) and func.value.id == "os" \
                    and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value in (1, 2):
                hit(node, "writes to a standard file descriptor")
            elif isinstance(func, ast.Attribute) and func.attr in LOUD_LOGGING \
                    and isinstance(func.value, ast.Name) \
                    and func.value.id in ("log", "logger", "logging"):
                hit(node, f"logs at {func.attr} level")
            elif isinstance(func, ast.Attribute) and func.attr in PROCESS_CALLS \
                    and isinstance(func.value, ast.Name) and func.value.id == "subprocess" \
                    and "capture_output" not in keywords \
                    and not {"stdout", "stderr"} <= keywords:
                hit(node, f"subprocess.{func.attr} inherits the terminal")
    return found


@pytest.mark.parametrize("path", _library_modules(),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_no_library_module_writes_to_the_terminal(path: Path) -> None:
    name = str(path.relative_to(SRC))
    assert terminal_writes(path.read_text(encoding="utf-8"), name) == []


@pytest.mark.parametrize("source", [
    "print('x')",
    "import sys\nsys.stderr.write('x')",
    "import sys\nprint('x', file=sys.stdout)",
    "import sys\nout = sys.stdout",
    "from plainsail.output import warn\n",
    "import plainsail.output\n",
    "from plainsail import output\n",
    "import os\nos.write(2, b'x')",
    "log.warning('x')",
    "import subprocess\nsubprocess.run(['true'])",
    "import subprocess\nsubprocess.Popen(['true'], stdout=subprocess.PIPE)",
])
def test_the_check_sees_each_way_of_writing(source: str) -> None:
    assert terminal_writes(source)


@pytest.mark.parametrize("source", [
    "import sys\nsys.stdout.flush()",
    "import sys\nfor s in (sys.stdout, sys.stderr):\n    s.flush()",
    "log.debug('x')",
    "import subprocess\nsubprocess.run(['true'], capture_output=True)",
    "import subprocess\nsubprocess.run(['true'], stdout=f, stderr=subprocess.STDOUT)",
    "if __name__ == '__main__':\n    print('x')",
    "import os\nos.write(fd, b'x')",
])
def test_the_check_lets_quiet_code_be(source: str) -> None:
    assert terminal_writes(source) == []
