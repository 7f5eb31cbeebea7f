"""Just enough shell reading for the workflow rules: split a script into simple commands
with their line numbers, keeping `${{ }}` expressions and `$( )` substitutions whole.

This is not a shell parser; it reads what deploy scripts in workflows contain (pipelines,
`&&` chains, `ssh host "..."` and heredocs, line continuations, variable assignments).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

_EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)
_SEPS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&", "{", "}"}
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_WRAPPERS = {"sudo", "exec", "time", "nohup", "env", "command", "then", "do", "else", "!",
             "if", "elif", "while", "until"}
_SSH_VALUE_OPTS = set("bcDEeFIiJLlmOopQRSWw")


@dataclass
class Command:
    line: int
    argv: list[str]
    before: str = ""  # the separator before the command ("" at the start of a line)
    after: str = ""  # the separator after it
    assigns: dict[str, str] = field(default_factory=dict)  # FOO=bar prefixes
    remote: bool = False  # found inside an `ssh host "..."` argument

    @property
    def name(self) -> str:
        return self.argv[0].rsplit("/", 1)[-1] if self.argv else ""

    def text(self) -> str:
        return " ".join(self.argv)


def _protect(text: str) -> tuple[str, dict[str, str]]:
    """Replace ${{ }} and $( ) with opaque words, so shlex keeps them whole."""
    saved: dict[str, str] = {}

    def keep(value: str) -> str:
        key = f"\x00{len(saved)}\x00"
        saved[key] = value
        return key

    text = _EXPR.sub(lambda m: keep(m.group(0)), text)
    out, i = [], 0
    while i < len(text):
        if text.startswith("$(", i) or text[i] == "`":
            if text[i] == "`":
                j = text.find("`", i + 1)
                end = len(text) if j < 0 else j + 1
            else:
                depth, j = 0, i + 1
                while j < len(text):
                    if text[j] == "(":
                        depth += 1
                    elif text[j] == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                end = min(len(text), j + 1)
            out.append(keep(text[i:end]))
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out), saved


def _restore(word: str, saved: dict[str, str]) -> str:
    if "\x00" not in word:
        return word
    for key, value in saved.items():
        word = word.replace(key, value)
    return word


def logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join backslash continuations; drop comment lines; keep the first line's number."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        stripped = text.strip()
        if pending is None and (not stripped or stripped.startswith("#")):
            continue
        if pending is not None:
            number, text = pending[0], pending[1] + " " + stripped
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
            continue
        out.append((number, text))
    if pending is not None:
        out.append(pending)
    return out


def split_commands(number: int, text: str, remote: bool = False) -> list[Command]:
    protected, saved = _protect(text)
    try:
        lexer = shlex.shlex(protected, posix=True, punctuation_chars=";&|(){}")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
    except ValueError:
        words = protected.split()
    commands: list[Command] = []
    current: list[str] = []
    before = ""

    def flush(sep: str) -> None:
        nonlocal current, before
        if current:
            commands.append(_command(number, current, before, sep, remote))
        elif commands and sep:
            commands[-1].after = commands[-1].after or sep
        current = []
        before = sep

    for word in words:
        if word in _SEPS:
            flush(word)
        else:
            current.append(_restore(word, saved))
    flush("")
    out: list[Command] = []
    for cmd in commands:
        out.append(cmd)
        out.extend(_ssh_remote(cmd))
    return out


def _command(number: int, words: list[str], before: str, after: str, remote: bool) -> Command:
    assigns: dict[str, str] = {}
    argv = list(words)
    while argv:
        m = _ASSIGN.match(argv[0])
        if m and len(argv) > 1:
            assigns[m.group(1)] = m.group(2)
            argv.pop(0)
        elif argv[0] in _WRAPPERS and len(argv) > 1:
            argv.pop(0)
        elif argv[0] == "timeout" and len(argv) > 2:
            argv = argv[2:]
        else:
            break
    return Command(number, argv, before, after, assigns, remote)


def _ssh_remote(cmd: Command) -> list[Command]:
    """The commands an `ssh [options] host 'cmd; cmd'` runs on the host."""
    if cmd.name not in ("ssh", "sshpass") or len(cmd.argv) < 2:
        return []
    args = cmd.argv[1:]
    if cmd.name == "sshpass":
        while args and args[0].startswith("-"):
            args = args[2:] if args[0] in ("-p", "-f", "-e") and len(args[0]) == 2 else args[1:]
        if not args or args[0] != "ssh":
            return []
        args = args[1:]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        opt = args[i]
        i += 2 if len(opt) == 2 and opt[1] in _SSH_VALUE_OPTS else 1
    rest = args[i + 1:]
    if not rest:
        return []
    return split_commands(cmd.line, " ".join(rest), remote=True)


def commands_of(lines: list[tuple[int, str]]) -> list[Command]:
    out: list[Command] = []
    for number, text in logical_lines(lines):
        out.extend(split_commands(number, text))
    return out


def assignment(cmd: Command) -> dict[str, str]:
    """Variables a command sets for the rest of the script (`X=1`, `export X=1`)."""
    words = cmd.argv
    if words and words[0] in ("export", "declare", "local", "readonly"):
        words = [w for w in words[1:] if not w.startswith("-")]
    found: dict[str, str] = {}
    if cmd.argv and not words and cmd.assigns:
        return dict(cmd.assigns)
    if words and all(_ASSIGN.match(w) for w in words):
        for w in words:
            m = _ASSIGN.match(w)
            assert m is not None
            found[m.group(1)] = m.group(2)
    elif not cmd.argv and cmd.assigns:
        found.update(cmd.assigns)
    return found


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
