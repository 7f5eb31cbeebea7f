"""A wrapper for secret values that cannot be printed by accident."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "***"
MIN_LEN = 3  # shorter values would turn ordinary words into ***

# Every value ever wrapped in a Secret in this process. The output boundaries (terminal,
# log lines, notification bodies, free-text fields of records, crash logs) redact them
# all with `scrub`; data the program parses or stores is never rewritten.
_KNOWN: set[str] = set()


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


def redact(text: str, secrets: Iterable[Secret | str]) -> str:
    """Replace every occurrence of each secret value (and its fragments) with `***`."""
    values: set[str] = set()
    for s in secrets:
        value = s.peek() if isinstance(s, Secret) else s
        if value:
            values.update(fragments(value))
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= MIN_LEN:
            text = text.replace(value, REDACTED)
    return text


def scrub(text: str, extra: Iterable[Secret | str] = ()) -> str:
    """Redact every secret this process knows of (and `extra`): for text leaving the
    program, never for data that is parsed or stored."""
    return redact(text, [*_KNOWN, *extra])


def forget_all() -> None:
    """Drop the known secrets (tests that check redaction from a clean slate)."""
    _KNOWN.clear()
