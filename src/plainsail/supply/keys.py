"""cosign-compatible key files: `cosign.key` (encrypted) and `cosign.pub` (PEM PKIX).

The private key file is a PEM block labelled `ENCRYPTED COSIGN PRIVATE KEY` (older cosign
and everything since) or `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign >= 2.0.1 writes it). Its
body is JSON:

    {"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":B64},
     "cipher":{"name":"nacl/secretbox","nonce":B64},"ciphertext":B64}

key = scrypt(passphrase, salt, N, r, p, 32 bytes); plaintext = PKCS#8 DER of an ECDSA
P-256 key, sealed with NaCl secretbox (XSalsa20-Poly1305). plainsail writes the COSIGN
label with N=32768, which every cosign release reads, and reads both labels and the N
values cosign has used.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.errors import SigningKeyError
from plainsail.inputs import TooLarge, loads_json, read_bounded
from plainsail.secret import Secret

COSIGN_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
SIGSTORE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
LABELS = (COSIGN_LABEL, SIGSTORE_LABEL)
WRITE_N = 32768
ACCEPTED_N = (32768, 65536, 131072)
MAX_KEY_FILE = 64 * 1024  # a cosign key file is a few hundred bytes
SCRYPT_R, SCRYPT_P = 8, 1


def _secretbox() -> Any:
    try:
        import nacl.exceptions
        import nacl.secret
    except ImportError:  # pragma: no cover - depends on the installation
        raise SigningKeyError(
            "cosign keys need PyNaCl; install it (pip install pynacl, or apt-get install "
            "python3-nacl)"
        ) from None
    return nacl


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _kdf(passphrase: Secret, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        passphrase.reveal().encode(), salt=salt, n=n, r=r, p=p, dklen=32,
        maxmem=256 * r * n + 1024 * 1024,
    )


def pem(label: str, body: bytes) -> bytes:
    b64 = _b64(body)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def unpem(text: bytes, path: str) -> tuple[str, bytes]:
    """(label, body) of the first PEM block in `text`."""
    try:
        s = text.decode("ascii")
        start = s.index("-----BEGIN ")
        label = s[start + 11 : s.index("-----", start + 11)]
        end = s.index(f"-----END {label}-----", start)
        body_text = s[s.index("\n", start) : end]
        return label, base64.b64decode("".join(body_text.split()), validate=True)
    except (ValueError, UnicodeDecodeError):
        raise SigningKeyError(f"{path} is not a PEM key file") from None


def encrypt_private_key(
    key: ec.EllipticCurvePrivateKey, passphrase: Secret, *, n: int = WRITE_N,
    label: str = COSIGN_LABEL,
) -> bytes:
    """The PEM bytes of `key` encrypted as cosign does."""
    nacl = _secretbox()
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(32)
    nonce = os.urandom(24)
    box = nacl.secret.SecretBox(_kdf(passphrase, salt, n, SCRYPT_R, SCRYPT_P))
    sealed = box.encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": SCRYPT_R, "p": SCRYPT_P},
                "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return pem(label, json.dumps(doc, separators=(",", ":")).encode())


def decrypt_private_key(data: bytes, passphrase: Secret, path: str) -> ec.EllipticCurvePrivateKey:
    """Decrypt a cosign private key file's bytes."""
    label, body = unpem(data, path)
    if label not in LABELS:
        raise SigningKeyError(
            f"{path} is a {label!r} PEM block, not a cosign private key "
            f"({COSIGN_LABEL!r} or {SIGSTORE_LABEL!r}); create one with plainsail keygen"
        )
    try:
        doc = loads_json(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(doc["ciphertext"])
    except (ValueError, KeyError, TypeError):
        raise SigningKeyError(f"{path} is not a valid cosign private key (bad JSON body)") from None
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise SigningKeyError(
            f"{path} uses {kdf.get('name')}/{cipher.get('name')}; only scrypt with "
            "nacl/secretbox (what cosign writes) is supported"
        )
    if n not in ACCEPTED_N or (r, p) != (SCRYPT_R, SCRYPT_P) or len(nonce) != 24:
        raise SigningKeyError(
            f"{path} has unsupported scrypt parameters N={n} r={r} p={p}; cosign uses "
            f"N in {ACCEPTED_N}, r=8, p=1"
        )
    nacl = _secretbox()
    box = nacl.secret.SecretBox(_kdf(passphrase, salt, n, r, p))
    try:
        der = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise SigningKeyError(
            f"wrong passphrase for {path}; set COSIGN_PASSWORD to the passphrase given to "
            "keygen"
        ) from None
    if not is_pkcs8(der):
        raise SigningKeyError(
            f"{path} decrypts to an SEC1 'EC PRIVATE KEY' (or another format), not a PKCS#8 "
            "private key, which is all cosign accepts; create one with plainsail keygen"
        )
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{path} decrypts, but not to a PKCS#8 private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningKeyError(f"{path} holds a non-ECDSA key; plainsail signs with ECDSA only")
    return key


def _der_header(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`."""
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4:
            raise ValueError("unsupported DER length")
        length, at = int.from_bytes(data[at : at + n], "big"), at + n
    if at + length > len(data):
        raise ValueError("truncated DER")
    return tag, at, at + length


def is_pkcs8(der: bytes) -> bool:
    """PKCS#8 PrivateKeyInfo is SEQUENCE {INTEGER version, SEQUENCE algorithm, ...};
    SEC1's ECPrivateKey has an OCTET STRING where the algorithm SEQUENCE is. cosign's
    x509.ParsePKCS8PrivateKey accepts only the first; cryptography would load both."""
    try:
        tag, start, _ = _der_header(der, 0)
        if tag != 0x30:
            return False
        tag, _, end = _der_header(der, start)
        if tag != 0x02:
            return False
        return _der_header(der, end)[0] == 0x30
    except (ValueError, IndexError):
        return False


def load_private_key(path: Path, passphrase: Secret | None = None) -> ec.EllipticCurvePrivateKey:
    data = _read(path, "private key", "create a key pair with plainsail keygen")
    return decrypt_private_key(data, passphrase or read_passphrase(str(path)), str(path))


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    data = _read(path, "public key", "give the cosign.pub made by keygen (signing.public_key)")
    return parse_public_key(data, str(path))


def parse_public_key(data: bytes, path: str = "public key") -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") \
            from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningKeyError(f"{path} is not an ECDSA public key; cosign keys are ECDSA P-256")
    return key


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path, what: str, hint: str) -> bytes:
    try:
        return read_bounded(path, MAX_KEY_FILE)
    except TooLarge as exc:
        raise SigningKeyError(f"{what} {path} is {exc}; a cosign key file is a few hundred "
                              "bytes: is this the right file?") from None
    except FileNotFoundError:
        raise SigningKeyError(f"{what} {path} does not exist; {hint}") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_passphrase(what: str, *, confirm: bool = False) -> Secret:
    """COSIGN_PASSWORD (may be empty, as in cosign), else ask on the terminal."""
    env = os.environ.get("COSIGN_PASSWORD")
    if env is not None:
        return Secret(env)
    if not sys.stdin.isatty():
        raise SigningKeyError(
            f"no passphrase for {what}: set COSIGN_PASSWORD (no terminal to ask on)"
        )
    first = getpass.getpass(f"Passphrase for {what}: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise SigningKeyError("the two passphrases differ; nothing was written")
    return Secret(first)


def key_root(key_path: Path) -> tuple[Path, bool]:
    """The top of the git work tree holding the key (True), else the key's folder (False):
    where the ignore files go, and what the paths shown to the user are relative to."""
    from plainsail.supply.git import git

    folder = key_path.resolve().parent
    proc = git(["rev-parse", "--show-toplevel"], folder, check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip()).resolve(), True
    return folder, False


def ignore_entries(key_path: Path) -> tuple[Path, list[str]]:
    """(folder, lines) for .dockerignore and .gitignore so that neither an image build nor
    a commit picks up the private key: the key's path and `.plainsail/`, relative to the
    top of the git work tree holding the key (else the key's folder)."""
    root, _ = key_root(key_path)
    return root, [key_path.resolve().relative_to(root).as_posix(), ".plainsail/"]


def add_ignore_entries(key_path: Path) -> list[tuple[str, list[str]]]:
    """Add the key and `.plainsail/` to .dockerignore and .gitignore (creating them when
    absent) unless they already exclude them; return what was changed, for the user: each
    file changed (its name in the folder of `ignore_entries`) and the lines added."""
    from plainsail.repofiles import inside, write
    from plainsail.supply import dockerignore
    from plainsail.supply.dockerignore import MAX_IGNORE_FILE

    root, lines = ignore_entries(key_path)
    changed: list[tuple[str, list[str]]] = []
    paths = {name: inside(root, name, "keygen") for name in (".dockerignore", ".gitignore")}
    for name, path in paths.items():
        try:
            text = read_bounded(path, MAX_IGNORE_FILE).decode() if path.exists() else ""
        except (OSError, UnicodeDecodeError, TooLarge) as exc:
            raise SigningKeyError(f"cannot read {path}: {exc}; nothing was written") from None
        present = {line.strip().lstrip("/") for line in text.splitlines()}
        if name == ".dockerignore":
            rules = dockerignore.parse(text)
            missing = [x for x in lines if not dockerignore.excluded(rules, x.rstrip("/"))]
        else:
            missing = [x for x in lines if x not in present and x.rstrip("/") not in present]
        if not missing:
            continue
        prefix = "" if not text or text.endswith("\n") else "\n"
        try:
            write(path, prefix + "".join(f"{x}\n" for x in missing), append=True)
        except OSError as exc:
            raise SigningKeyError(f"cannot write {path}: {exc.strerror}") from None
        changed.append((name, missing))
    return changed


def check_free(prefix: str) -> tuple[Path, Path]:
    """PREFIX.key and PREFIX.pub, or SigningKeyError when either exists."""
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():  # a dangling link too: never written through
            raise SigningKeyError(
                f"{p} already exists; refusing to overwrite a key (move it away, or use "
                "--output-key-prefix)"
            )
    return key_path, pub_path


def generate(prefix: str, passphrase: Secret | None = None) -> tuple[Path, Path]:
    """Write PREFIX.key (mode 0600) and PREFIX.pub; refuse to overwrite either."""
    key_path, pub_path = check_free(prefix)
    if passphrase is None:
        passphrase = read_passphrase(str(key_path), confirm=True)
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = encrypt_private_key(key, passphrase)
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(encrypted)
        fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_pem(key.public_key()))
    except FileExistsError as exc:
        raise SigningKeyError(f"{exc.filename} appeared meanwhile; refusing to overwrite") \
            from None
    except OSError as exc:
        raise SigningKeyError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return key_path, pub_path
