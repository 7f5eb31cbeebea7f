"""Shell reading for the workflow rules, on a real parser (tree-sitter's bash grammar).

A script becomes the list of simple commands it runs, in order, each with its line, its
argv (quotes removed, `${{ }}` expressions kept whole), the operators around it (`&&`,
`||`, `|`, `;`), and where it sits: inside `$( )` (and the variable that captures it), in
an `if`/`while` condition, or on a remote host (an `ssh host '...'` argument, a heredoc fed
to ssh or a shell, `bash -c '...'`). The grammar is error-tolerant: text it cannot read
becomes ERROR nodes whose commands are still found, so no script makes it raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from plainsail.errors import PlainsailError

_EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)
_HOLE = re.compile(r"__ghx(\d+)__")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_WRAPPERS = {"sudo", "exec", "time", "nohup", "env", "command", "builtin", "xargs", "nice"}
_SSH_VALUE_OPTS = set("bcDEeFIiJLlmOopQRSWw")
_SHELLS = {"sh", "bash", "zsh", "dash", "ash"}
_OPERATORS = {"&&", "||", "|", "|&", ";", "&", ";;"}
_MAX_DEPTH = 6  # nested ssh/bash -c/heredoc levels read


@dataclass
class Command:
    line: int
    argv: list[str]
    before: str = ""  # the operator before the command ("" at the start of a statement)
    after: str = ""  # the operator after it
    assigns: dict[str, str] = field(default_factory=dict)  # FOO=bar prefixes
    remote: bool = False  # runs on another host (ssh argument or heredoc)
    captured: str = ""  # inside `VAR=$( ... )`: VAR
    substituted: bool = False  # inside `$( )` or backticks
    condition: bool = False  # the condition of an if/while/until
    piped_to: str = ""  # the name of the command its output is piped into
    level: int = 0  # nesting of substitutions (separators apply per level)

    @property
    def name(self) -> str:
        return self.argv[0].rsplit("/", 1)[-1] if self.argv else ""

    def text(self) -> str:
        return " ".join(self.argv)


@lru_cache(maxsize=1)
def _parser() -> Any:
    try:
        import tree_sitter
        import tree_sitter_bash
    except ImportError as exc:
        raise PlainsailError("plainsail audit reads shell scripts with tree-sitter, which is "
                             "not installed: pip install 'plainsail[audit]'") from exc
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


class _Reader:
    def __init__(self, rows: list[int], saved: list[str], remote: bool, depth: int) -> None:
        self.rows = rows  # script row -> YAML line
        self.saved = saved  # ${{ }} expressions, by hole number
        self.remote = remote
        self.depth = depth
        self.out: list[Command] = []

    def line(self, node: Any) -> int:
        row = node.start_point[0]
        return self.rows[min(row, len(self.rows) - 1)] if self.rows else 1

    def hole(self, expr: str) -> str:
        self.saved.append(expr)
        return f"__ghx{len(self.saved) - 1}__"

    def restore(self, text: str) -> str:
        return _HOLE.sub(lambda m: self.saved[int(m.group(1))]
                         if int(m.group(1)) < len(self.saved) else m.group(0), text)

    def value(self, node: Any) -> str:
        """The word a node stands for, quotes removed (expansions kept as written)."""
        t = node.type
        raw = node.text.decode("utf-8", "replace")
        if t == "string":
            raw = raw[1:-1] if len(raw) >= 2 and raw.endswith('"') else raw.lstrip('"')
            raw = raw.replace('\\"', '"').replace("\\$", "$").replace("\\`", "`")
        elif t == "raw_string":
            raw = raw[1:-1] if len(raw) >= 2 else raw
        elif t == "ansi_c_string":
            raw = raw[2:-1] if len(raw) >= 3 else raw
        elif t == "concatenation":
            raw = "".join(self.value(c) for c in node.children)
        elif t == "word":
            raw = re.sub(r"\\(.)", r"\1", raw)
        return self.restore(raw)

    # ------------------------------------------------------------ walking

    def walk(self, node: Any, ctx: dict[str, Any]) -> None:
        t = node.type
        if t == "command":
            self.command(node, ctx)
        elif t in ("variable_assignment", "variable_assignments"):
            self.assignment(node, ctx)
        elif t == "declaration_command":
            self.declaration(node, ctx)
        elif t in ("command_substitution", "process_substitution"):
            self.sequence(node, {**ctx, "substituted": True, "level": ctx["level"] + 1})
        elif t in ("if_statement", "while_statement", "elif_clause"):
            self.conditional(node, ctx)
        elif t == "redirected_statement":
            self.redirected(node, ctx)
        elif t == "test_command":
            self.emit(node, ["test", *self.leaves(node)], {}, ctx)
            self.substitutions(node, {**ctx, "start": len(self.out)})
        elif t == "heredoc_body" or t in ("comment",):
            return
        else:
            self.sequence(node, ctx)

    def sequence(self, node: Any, ctx: dict[str, Any]) -> None:
        """Children in order, with the operators between them set on the commands."""
        before = ""
        for child in node.children:
            if child.type in _OPERATORS:
                last = self.last(ctx["level"], start=ctx.get("start", 0))
                if last is not None and not last.after:
                    last.after = child.type
                before = child.type
                continue
            start = len(self.out)
            self.walk(child, {**ctx, "start": start})
            first = next((c for c in self.out[start:] if c.level == ctx["level"]), None)
            if first is not None and not first.before:
                first.before = before
            if before in ("|", "|&") and first is not None:
                prev = self.last(ctx["level"], end=start)
                if prev is not None and not prev.piped_to:
                    prev.piped_to = first.name
            if child.is_named:
                before = ""

    def leaves(self, node: Any) -> list[str]:
        """The words of a `[ ... ]` / `[[ ... ]]` test, expansions kept as written."""
        out: list[str] = []
        for child in node.children:
            if child.type in ("string", "raw_string", "word", "simple_expansion", "expansion",
                              "concatenation", "number", "command_substitution"):
                out.append(self.value(child))
            elif child.child_count:
                out.extend(self.leaves(child))
            elif child.type not in ("[", "]", "[[", "]]"):
                out.append(child.text.decode("utf-8", "replace"))
        return out

    def last(self, level: int, start: int = 0, end: int | None = None) -> Command | None:
        items = self.out[start:end]
        return next((c for c in reversed(items) if c.level == level), None)

    def conditional(self, node: Any, ctx: dict[str, Any]) -> None:
        in_condition = True
        for child in node.children:
            if child.type in ("then", "do_group", "else_clause", "elif_clause", "fi"):
                in_condition = False
            if child.type in ("if", "while", "until", "elif", ";", "then", "fi"):
                continue
            self.walk(child, {**ctx, "condition": ctx.get("condition") or in_condition})

    def emit(self, node: Any, argv: list[str], assigns: dict[str, str],
             ctx: dict[str, Any]) -> Command:
        cmd = Command(self.line(node), argv, assigns=assigns,
                      remote=self.remote or bool(ctx.get("remote")),
                      captured=ctx.get("captured", ""),
                      substituted=bool(ctx.get("substituted")),
                      condition=bool(ctx.get("condition")), level=ctx["level"])
        self.out.append(cmd)
        return cmd

    def command(self, node: Any, ctx: dict[str, Any]) -> None:
        assigns: dict[str, str] = {}
        words: list[str] = []
        nested: list[Any] = []
        for child in node.children:
            if child.type == "variable_assignment":
                name, value = self.pair(child)
                assigns[name] = value
                nested.append(child)
            elif child.type in ("command_name",):
                words.append(self.value(child.children[0]) if child.children else "")
                nested.append(child)
            elif child.is_named and child.type not in ("comment", "file_redirect",
                                                       "herestring_redirect"):
                words.append(self.value(child))
                nested.append(child)
        argv = _unwrap(words)
        cmd = self.emit(node, argv, assigns, ctx)
        inner_ctx = {**ctx, "captured": "", "start": len(self.out)}
        for child in nested:
            self.substitutions(child, inner_ctx)
        self.inline(cmd, node, ctx)

    def substitutions(self, node: Any, ctx: dict[str, Any]) -> None:
        """Commands inside `$( )`/backticks anywhere below a word."""
        if node.type in ("command_substitution", "process_substitution"):
            self.walk(node, ctx)
            return
        for child in node.children:
            self.substitutions(child, ctx)

    def pair(self, node: Any) -> tuple[str, str]:
        name = node.children[0].text.decode("utf-8", "replace") if node.children else ""
        value_nodes = node.children[2:] if len(node.children) > 2 else []
        value = "".join(self.value(v) for v in value_nodes)
        return name, value

    def assignment(self, node: Any, ctx: dict[str, Any]) -> None:
        pairs = [node] if node.type == "variable_assignment" else [
            c for c in node.children if c.type == "variable_assignment"]
        for p in pairs:
            name, value = self.pair(p)
            self.emit(p, [], {name: value}, ctx)
            self.substitutions(p, {**ctx, "captured": name, "start": len(self.out)})

    def declaration(self, node: Any, ctx: dict[str, Any]) -> None:
        words: list[str] = []
        pairs: list[Any] = []
        for child in node.children:
            if child.type == "variable_assignment":
                name, value = self.pair(child)
                words.append(f"{name}={value}")
                pairs.append((child, name))
            elif child.is_named or child.type in ("export", "declare", "local", "readonly",
                                                  "typeset"):
                words.append(self.value(child))
        self.emit(node, words, {}, ctx)
        for child, name in pairs:
            self.substitutions(child, {**ctx, "captured": name, "start": len(self.out)})

    def redirected(self, node: Any, ctx: dict[str, Any]) -> None:
        body = node.child_by_field_name("body") or (node.children[0] if node.children
                                                    else None)
        start = len(self.out)
        if body is not None:
            self.walk(body, ctx)
        main = self.out[start] if len(self.out) > start else None
        for child in node.children:
            if child.type != "heredoc_redirect":
                continue
            heredoc = next((c for c in child.children if c.type == "heredoc_body"), None)
            # the commands before/after a heredoc in the same line (`<< EOF && next`)
            for c in child.children:
                if c.is_named and c.type not in ("heredoc_body", "heredoc_start",
                                                 "heredoc_end", "heredoc_redirect"):
                    self.walk(c, ctx)
            if heredoc is None or main is None:
                continue
            names = [main.name, *main.argv[1:2]]
            reads_script = main.name in _SHELLS or main.name == "ssh" or (
                main.name in ("sshpass",) and "ssh" in main.argv) or (
                main.name == "ssh" and any(n in _SHELLS for n in names))
            if reads_script:
                self.nested(heredoc.text.decode("utf-8", "replace"), heredoc,
                            remote=main.name in ("ssh", "sshpass"), ctx=ctx)

    def nested(self, script: str, node: Any, remote: bool, ctx: dict[str, Any]) -> None:
        if self.depth >= _MAX_DEPTH:
            return
        row = node.start_point[0]
        rows = [self.rows[min(row + i, len(self.rows) - 1)] if self.rows else 1
                for i in range(script.count("\n") + 1)]
        inner = _Reader(rows, self.saved, self.remote or remote, self.depth + 1)
        inner.read(_EXPR.sub(lambda m: self.hole(m.group(0)), script))
        for c in inner.out:
            c.level += ctx["level"]
            c.condition = c.condition or bool(ctx.get("condition"))
        self.out.extend(inner.out)

    def inline(self, cmd: Command, node: Any, ctx: dict[str, Any]) -> None:
        """Scripts a command hands to another shell: ssh HOST '...', bash -c '...'."""
        argv = cmd.argv
        if not argv:
            return
        script = ""
        remote = False
        if cmd.name in _SHELLS and "-c" in argv[1:-1]:
            script = argv[argv.index("-c", 1) + 1]
        elif cmd.name == "eval":
            script = " ".join(argv[1:])
        elif cmd.name in ("ssh", "sshpass"):
            script, remote = _ssh_script(argv), True
        if script.strip():
            self.nested(script, node, remote, {**ctx, "level": ctx["level"]})

    def read(self, script: str) -> None:
        tree = _parser().parse(script.encode("utf-8", "replace"))
        self.sequence(tree.root_node, {"level": 0, "start": 0})


def _unwrap(words: list[str]) -> list[str]:
    """argv without the wrappers that run the real command (sudo, env X=1, timeout 60)."""
    argv = list(words)
    while len(argv) > 1:
        head = argv[0].rsplit("/", 1)[-1]
        if head in _WRAPPERS:
            argv.pop(0)
            while len(argv) > 1 and (argv[0].startswith("-") or _ASSIGN.match(argv[0])):
                argv.pop(0)  # sudo -E, env FOO=bar
        elif head == "timeout" and len(argv) > 2:
            rest = argv[1:]
            while len(rest) > 1 and rest[0].startswith("-"):
                rest = rest[1:]
            argv = rest[1:] or argv
        else:
            break
    return argv


def _ssh_script(argv: list[str]) -> str:
    """The command line an `ssh [options] host cmd...` (or sshpass ... ssh) runs there."""
    args = argv[1:]
    if argv and argv[0].rsplit("/", 1)[-1] == "sshpass":
        while args and args[0].startswith("-"):
            args = args[2:] if args[0] in ("-p", "-f", "-e") and len(args[0]) == 2 else args[1:]
        if not args or args[0] != "ssh":
            return ""
        args = args[1:]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        opt = args[i]
        i += 2 if len(opt) == 2 and opt[1] in _SSH_VALUE_OPTS else 1
    return " ".join(args[i + 1:])


def commands_of(lines: list[tuple[int, str]]) -> list[Command]:
    """The commands of a script given as (line number, text) pairs, in the order they run."""
    if not lines:
        return []
    reader = _Reader([n for n, _ in lines], [], remote=False, depth=0)
    reader.read(_EXPR.sub(lambda m: reader.hole(m.group(0)),
                          "\n".join(text for _, text in lines)))
    return reader.out


def assignment(cmd: Command) -> dict[str, str]:
    """Variables a command sets for the rest of the script (`X=1`, `export X=1`)."""
    if not cmd.argv:
        return dict(cmd.assigns)
    words = cmd.argv
    if words[0] in ("export", "declare", "local", "readonly", "typeset"):
        words = [w for w in words[1:] if not w.startswith("-")]
        found: dict[str, str] = {}
        for w in words:
            m = _ASSIGN.match(w)
            if m:
                found[m.group(1)] = m.group(2)
        return found
    return {}


def positional(args: list[str], flags_without_value: set[str]) -> list[str]:
    """Positional arguments of a docker-like command line: options that are not in
    `flags_without_value` take the next word unless written `--opt=value`."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i + 1:])
            break
        if a.startswith("--"):
            i += 1 if ("=" in a or a in flags_without_value) else 2
            continue
        if a.startswith("-") and len(a) > 1:
            letters = a[1:]
            if all(f"-{c}" in flags_without_value for c in letters):
                i += 1
            elif len(letters) > 1 and not all(f"-{c}" in flags_without_value
                                                for c in letters[:-1]):
                i += 1  # -p8080:80 style: value attached
            else:
                i += 2
            continue
        out.append(a)
        i += 1
    return out


def option_values(args: list[str], names: tuple[str, ...]) -> list[str]:
    """Values of `--name value`, `--name=value` and `-n value` options."""
    out: list[str] = []
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                out.append(args[i + 1])
            elif n.startswith("--") and a.startswith(n + "="):
                out.append(a[len(n) + 1:])
    return out
