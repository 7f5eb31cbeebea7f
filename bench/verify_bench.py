"""Time verifying one signature, without the registry round trips.

What is timed is what verify_image does once the bytes are fetched: load the PEM public
key, parse the `.sig` manifest, check the ECDSA signature over the payload, parse the
payload and compare its digest. Run: python bench/verify_bench.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import time

from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.supply import keys, signatures

DIGEST = "sha256:" + "ab" * 32


def main(rounds: int = 2000) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pub_pem = keys.public_pem(private.public_key())
    payload = signatures.make_payload("registry.example.com/acme/notes-api", DIGEST)
    layer = signatures.Layer("sha256:" + "cd" * 32, len(payload), signatures.sign(private, payload))
    manifest = signatures.make_manifest("sha256:" + "ef" * 32, 240, [layer])

    def once() -> None:
        key = keys.parse_public_key(pub_pem)
        (found,) = signatures.parse_manifest(manifest)
        verdict = signatures.check(key, DIGEST, [signatures.Candidate(payload, found.signature)])
        assert verdict is None

    for _ in range(50):  # warm up
        once()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        once()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"verify one signature (no registry I/O), {rounds} rounds:")
    print(f"  mean {statistics.fmean(samples):.3f} ms, median {statistics.median(samples):.3f} ms,"
          f" p99 {p99:.3f} ms, max {samples[-1]:.3f} ms (target: well under 50 ms)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
