"""RFC 6962 / RFC 9162 Merkle tree hashing and inclusion (audit path) verification, as a
transparency log such as Rekor proves that an entry is in the tree whose root it signed."""

from __future__ import annotations

import hashlib


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index: int, size: int, leaf: bytes,
                              path: list[bytes]) -> bytes:
    """The root hash that `path` proves leaf `index` (hash `leaf`) of a tree of `size`
    leaves belongs to (RFC 9162 section 2.1.3.2); ValueError if the path's length does
    not fit `index` and `size`."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("the audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("the audit path is shorter than the tree is deep")
    return r
