"""Lint many files fast: each file is parsed once, results are cached by the file's
checksum, and when many files are not in the cache they are split across the CPU cores
(forked workers that send their results back through a pipe).

The cache is a JSON file in $PLAINSAIL_LINT_CACHE (a folder; `off` disables it), else
$XDG_CACHE_HOME/plainsail, else ~/.cache/plainsail. Its key covers the text, where the
no-transaction marker counts, and the lint's own code and pglast version, so a new
release never reuses an old verdict.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plainsail.lint.catalog import Column
from plainsail.lint.engine import FileResult, Finding, analyze, resolve
from plainsail.lint.sources import Source
from plainsail.migrations.files import sha256

# Fewer uncached files than this are linted in this process: linting one file takes about
# 0.1-0.2 ms and forking a worker about 2 ms, so below this a second process saves little
# (bench/lint_bench.py measures both ways).
PARALLEL_FROM = 200
_MAX_ENTRIES = 50_000


def _salt() -> str:
    """Changes with the lint's code and with the installed pglast (its parser's file)."""
    from importlib.machinery import PathFinder

    h = sha256()
    spec = PathFinder.find_spec("pglast")
    if spec is not None and spec.origin:
        for p in sorted(Path(spec.origin).parent.glob("parser*")):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    here = Path(__file__).resolve().parent
    for name in ("engine.py", "rules.py", "batch.py", "pgparse.py"):
        h.update((here / name).read_bytes())
    return str(h.hexdigest())[:16]


def cache_file() -> Path | None:
    where = os.environ.get("PLAINSAIL_LINT_CACHE")
    if where and where.lower() in ("off", "0", "no", "false"):
        return None
    if where:
        base = Path(where)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "plainsail"
    return base / f"lint-{_salt()}.json"


def _key(s: Source) -> str:
    h = sha256(f"{s.first_line}:{int(s.marked)}:".encode())
    h.update(s.text.encode("utf-8", "surrogatepass"))
    return str(h.hexdigest())


def _dump(r: FileResult) -> list[Any]:
    return [
        [[f.line, f.statement, f.rule, f.message] for f in r.findings],
        [[list(d), line, number] for d, line, number in r.deferred],
        {k: [c.type, c.typmod, c.default] for k, c in r.columns.items()},
        [list(s) for s in r.spans],
        [list(a) for a in r.allows],
    ]


def _load(data: list[Any]) -> FileResult:
    findings, deferred, columns, spans, allows = data
    return FileResult(
        findings=[Finding("", line, st, rule, msg) for line, st, rule, msg in findings],
        deferred=[(tuple(d), line, number) for d, line, number in deferred],
        columns={k: Column(t, m, d) for k, (t, m, d) in columns.items()},
        spans=[tuple(s) for s in spans],
        allows=[tuple(a) for a in allows],
    )


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs time


def _write_cache(path: Path | None, entries: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # then renamed: atomic
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(entries, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only home: lint without a cache


def _analyze_chunk(chunk: list[tuple[str, int, bool]]) -> list[list[Any]]:
    return [_dump(analyze(text, first, marked)) for text, first, marked in chunk]


def _workers(count: int) -> int:
    if count < PARALLEL_FROM or not hasattr(os, "fork"):
        return 1
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return 1  # forking a process with other threads running is not safe
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return max(1, min(cpus, 4, count // (PARALLEL_FROM // 2)))


def _forked(chunk: list[tuple[str, int, bool]]) -> tuple[int, int]:
    """Start a worker for `chunk`; returns its pid and the pipe its result comes from."""
    import marshal

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: analyze, send, exit without running the parent's cleanup
        code = 0
        try:
            os.close(r)
            data = marshal.dumps(_analyze_chunk(chunk))
            with os.fdopen(w, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001 - the parent redoes the chunk itself
            code = 1
        os._exit(code)
    os.close(w)
    return pid, r


def _collect(pid: int, r: int, chunk: list[tuple[str, int, bool]]) -> list[list[Any]]:
    import marshal

    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status == 0 and data:
        try:
            result = marshal.loads(data)
            if isinstance(result, list) and len(result) == len(chunk):
                return result
        except (EOFError, ValueError, TypeError):
            pass
    return _analyze_chunk(chunk)  # the worker failed: do its share here


def _analyze_parallel(jobs: list[tuple[str, int, bool]], n: int) -> list[list[Any]]:
    size = -(-len(jobs) // n)
    chunks = [jobs[k:k + size] for k in range(0, len(jobs), size)]
    for name in ("plainsail.lint.pgparse", "plainsail.lint.rules"):
        __import__(name)  # once, before forking, not in every worker
    for out in (sys.stdout, sys.stderr):
        out.flush()
    started = [(_forked(c), c) for c in chunks[1:]]
    first = _analyze_chunk(chunks[0])
    return first + [d for (pid, r), c in started for d in _collect(pid, r, c)]


def analyze_all(sources: Sequence[Source], use_cache: bool = True) -> list[FileResult]:
    path = cache_file() if use_cache else None
    cache = _read_cache(path)
    keys = [_key(s) for s in sources]
    results: list[FileResult | None] = [None] * len(sources)
    todo: list[int] = []
    for i, key in enumerate(keys):
        hit = cache.get(key)
        if hit is not None:
            try:
                results[i] = _load(hit)
                continue
            except (TypeError, ValueError):
                pass
        todo.append(i)
    if todo:
        jobs = [(sources[i].text, sources[i].first_line, sources[i].marked) for i in todo]
        n = _workers(len(jobs))
        dumped = _analyze_chunk(jobs) if n == 1 else _analyze_parallel(jobs, n)
        for i, data in zip(todo, dumped, strict=True):
            cache[keys[i]] = data
            results[i] = _load(data)
        if path is not None:
            if len(cache) > _MAX_ENTRIES:
                cache = {k: cache[k] for k in keys if k in cache}
            _write_cache(path, cache)
    return [r for r in results if r is not None]


def lint_sources(sources: Sequence[Source], use_cache: bool = True) -> list[Finding]:
    """Findings of every source whose `report` is set, in order; every source, reported
    or not, tells later ones what it did to columns (defaults, types)."""
    known: dict[str, Column] = {}
    findings: list[Finding] = []
    for source, result in zip(sources, analyze_all(sources, use_cache), strict=True):
        findings += resolve(source.name, result, known, report=source.report)
    return findings
