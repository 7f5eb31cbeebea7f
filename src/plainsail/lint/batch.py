"""Lint many files fast: each file is parsed once, results are cached by the file's
checksum, and files not in the cache are split across the CPU cores.

The cache is a JSON file in $PLAINSAIL_LINT_CACHE (a folder; `off` disables it), else
$XDG_CACHE_HOME/plainsail, else ~/.cache/plainsail. Its key covers the text, where the
no-transaction marker counts, and the lint's own code and pglast version, so a new
release never reuses an old verdict.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from plainsail.lint.catalog import Column
from plainsail.lint.engine import FileResult, Finding, analyze, resolve
from plainsail.lint.sources import Source

# Fewer uncached files than this are linted in this process: parsing one file takes about
# 0.15 ms, so below this starting a second process costs more than it saves.
PARALLEL_FROM = 2000
_MAX_ENTRIES = 50_000


def _salt() -> str:
    """Changes with the lint's code and with the installed pglast (its parser's file)."""
    import importlib.util

    h = hashlib.sha256()
    spec = importlib.util.find_spec("pglast")
    if spec is not None and spec.origin:
        for p in sorted(Path(spec.origin).parent.glob("parser*")):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    here = Path(__file__).resolve().parent
    for name in ("engine.py", "rules.py", "batch.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


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
    h = hashlib.sha256(f"{s.first_line}:{int(s.marked)}:".encode())
    h.update(s.text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".lint-", suffix=".tmp",
                                         delete=False, encoding="utf-8") as tmp:
            tmp.write(json.dumps(entries, separators=(",", ":")))
        os.replace(tmp.name, path)
    except OSError:
        pass  # a read-only home: lint without a cache


def _analyze_chunk(chunk: list[tuple[str, int, bool]]) -> list[list[Any]]:
    return [_dump(analyze(text, first, marked)) for text, first, marked in chunk]


def _workers(count: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if count < PARALLEL_FROM or cpus < 2:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # spawning fresh interpreters costs more than it saves here
    return min(cpus, 4)


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
        if n == 1:
            dumped = _analyze_chunk(jobs)
        else:
            size = -(-len(jobs) // n)
            chunks = [jobs[k:k + size] for k in range(0, len(jobs), size)]
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=len(chunks), mp_context=ctx) as pool:
                dumped = [d for part in pool.map(_analyze_chunk, chunks) for d in part]
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
