"""One exception root for every expected failure, with a subclass per area.

Messages say what went wrong and what to do next; the CLI prints them as one line and
exits 1. Anything that is not a PlainsailError is a bug: the CLI exits 3 and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PlainsailError(Exception):
    """An expected failure; `str(err)` is the one line shown to the user.

    `record` is the deploy record of an attempt that stopped with this error, when there
    is one (`--json` prints it).
    """

    exit_code = 1
    record: dict[str, Any] | None = None


class ConfigError(PlainsailError):
    """plainsail.yml is missing, malformed or invalid."""

    def __init__(self, problems: Sequence[str] | str, path: str = "plainsail.yml") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = path
        if len(self.problems) == 1:
            msg = f"{path}: {self.problems[0]}"
        else:
            msg = f"{path}: {len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(msg)


class UsageError(PlainsailError):
    """A command was asked for something it cannot do (wrong argument, mutable tag, ...)."""

    exit_code = 2


class GitError(PlainsailError):
    """The work tree is not a git repository, is dirty, or git failed."""


class BuildError(PlainsailError):
    """docker build failed or the build context is unusable."""


class RegistryError(PlainsailError):
    """The registry is unreachable, refused the credentials, or answered unexpectedly."""


class RegistryNotFoundError(RegistryError):
    """The registry has no such manifest, blob or repository (404)."""


class SignatureError(PlainsailError):
    """An image is unsigned, signed by another key, or its tag moved."""


class VerificationError(SignatureError):
    """An image failed verification; `reason` is one of REASONS, for records and callers."""

    REASONS = ("unsigned", "wrong-key", "wrong-digest", "wrong-identity", "not-cosign",
               "untrusted", "tag-drift", "not-found")

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class SigningKeyError(PlainsailError):
    """A signing key is missing, malformed, or its passphrase is wrong."""


class RemoteError(PlainsailError):
    """A command on a host failed. Carries host, argv, exit code and output tail."""

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        argv: Sequence[str] = (),
        returncode: int | None = None,
        output_tail: str = "",
    ) -> None:
        self.host = host
        self.argv = list(argv)
        self.returncode = returncode
        self.output_tail = output_tail
        super().__init__(message)


class MigrationError(PlainsailError):
    """A migration failed or the migration history does not match the files."""


class HealthError(PlainsailError):
    """The new version did not pass its health gate."""


class LockError(PlainsailError):
    """Another deploy holds the service's lock."""


class DeployError(PlainsailError):
    """A deploy or rollback did not complete; the record says how far it got."""


class DeployInterrupted(DeployError):
    """SIGTERM or Ctrl-C before any host changed (exit 130, as every interruption)."""

    exit_code = 130


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
