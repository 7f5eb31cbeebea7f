"""A wrapper for secret values that cannot be printed by accident, and the redaction of
text leaving the program.

The redaction rule (docs/configuration.md, "How secrets are redacted"):

- Every occurrence of a secret value (and of the password inside a URL value) becomes
  `***`, except where it lies inside a *public name*: the service, the image, host and
  user names, the proxy's domains, and the user, host and database of a URL secret
  (`declare_public`; plainsail.config declares them when it loads). A value that is part
  of a public name is printed wherever that name is (status, history, container names),
  so stars there would protect nothing and would only tell the reader the value; output
  keeps the name readable instead, and `weakness` makes `config check` and the deploy's
  preflight warn about such a secret.
- A value shorter than `STRONG_LEN` characters is redacted only as a whole word (not
  inside a longer run of letters and digits): stars in the middle of a word would cut
  ordinary words and show the value by what is left around them. Such a value is also
  warned about. Values shorter than `MIN_LEN` are never searched for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"
MIN_LEN = 3  # shorter values would turn ordinary words into ***
STRONG_LEN = 8  # shorter values are redacted as whole words only, and warned about

# Every value ever wrapped in a Secret in this process. The output boundaries (terminal,
# log lines, notification bodies, free-text fields of records, crash logs) redact them
# all with `scrub`; data the program parses or stores is never rewritten.
_KNOWN: set[str] = set()
# Public names (service, image, hosts, users, ...): redaction never cuts into them.
_PUBLIC: set[str] = set()


class Secret:
    """Holds a secret string; str(), repr() and format() all show `***`.

    Call `.reveal()` at the single place that must hand the value on (an env file written
    with mode 0600, an HTTP Authorization header, a passphrase to a KDF).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if value:
            _KNOWN.add(value)
            declare_public(url_public_parts(value))

    def reveal(self) -> str:
        return self._value

    def peek(self) -> str:
        """The value if it is known, without reading anything (a secret that comes from a
        source not read yet gives ""): what redaction uses."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        import hashlib

        return hash(("Secret", hashlib.sha256(self._value.encode()).hexdigest()))

    def __reduce__(self) -> str | tuple[object, ...]:  # never pickled into a file by accident
        raise TypeError("Secret values cannot be pickled")


def fragments(value: str) -> list[str]:
    """The value itself and the parts of it that are secret on their own: the password of
    a URL such as postgresql://user:PASSWORD@host/db, which an app may echo in an error."""
    found = [value]
    if "://" in value:
        from urllib.parse import unquote, urlsplit

        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            found += [password, unquote(password)]
    return found


def url_public_parts(value: str) -> list[str]:
    """The parts of a URL value that are not secret: its user name and host, and for a
    database URL its database name (postgresql://USER:password@HOST/DB)."""
    if "://" not in value:
        return []
    from urllib.parse import unquote, urlsplit

    try:
        u = urlsplit(value)
        parts = [u.username or "", u.hostname or ""]
    except ValueError:
        return []
    if u.scheme.startswith(("postgres", "mysql", "mariadb")):
        parts.append(unquote(u.path.lstrip("/")))
    return [p for p in parts if p and "/" not in p]


def declare_public(names: Iterable[str]) -> None:
    """Names anyone may read (service, image, hosts, users): redaction keeps them whole."""
    _PUBLIC.update(n for n in names if n)


def _pattern(value: str) -> re.Pattern[str]:
    escaped = re.escape(value)
    if len(value) < STRONG_LEN:  # a whole word only
        escaped = rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])"
    return re.compile(escaped)


def redact(text: str, secrets: Iterable[Secret | str]) -> str:
    """Replace every occurrence of each secret value (and its fragments) with `***`,
    by the rule in this module's docstring."""
    values: set[str] = set()
    for s in secrets:
        value = s.peek() if isinstance(s, Secret) else s
        if value:
            values.update(v for v in fragments(value) if len(v) >= MIN_LEN)
    if not values or not text:
        return text
    public = [(m.start(), m.end()) for name in _PUBLIC if len(name) >= MIN_LEN
              for m in re.finditer(re.escape(name), text)]
    hits: list[tuple[int, int]] = []
    for value in values:
        for m in _pattern(value).finditer(text):
            start, end = m.span()
            if not any(ps <= start and end <= pe for ps, pe in public):
                hits.append((start, end))
    if not hits:
        return text
    merged: list[list[int]] = []
    for start, end in sorted(hits):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out += [text[pos:start], REDACTED]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def weakness(value: str) -> str | None:
    """Why a secret's value is weak (None: it is not): shorter than STRONG_LEN, or part
    of a public name. Never contains the value."""
    if not value:
        return None
    for name in sorted(_PUBLIC):
        if value in name:
            return ("it occurs in a public name (the service, image, a host or user name), "
                    "which output keeps readable, so it is shown there")
    if len(value) < STRONG_LEN:
        return (f"it is shorter than {STRONG_LEN} characters: easy to guess, and redacted "
                "only where it stands as a whole word")
    return None


def scrub(text: str, extra: Iterable[Secret | str] = ()) -> str:
    """Redact every secret this process knows of (and `extra`): for text leaving the
    program, never for data that is parsed or stored."""
    return redact(text, [*_KNOWN, *extra])


def forget_all() -> None:
    """Drop the known secrets and public names (tests that check redaction from a clean
    slate)."""
    _KNOWN.clear()
    _PUBLIC.clear()
