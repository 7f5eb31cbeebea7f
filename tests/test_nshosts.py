"""scripts/hosts.sh: hosts that are separate machines in all that a deploy sees (own engine,
own home, reached over SSH only), brought up idempotently."""

from __future__ import annotations

from tests.support.nshosts import NSHost, hosts_sh


def test_hosts_are_separate_and_up_is_idempotent(ns_hosts: list[NSHost]) -> None:
    before = hosts_sh("list")
    assert hosts_sh("up", str(len(ns_hosts))) == before  # nothing restarted or renamed
    roots, homes = set(), set()
    for h in ns_hosts:
        res = h.run(["sh", "-c", 'echo "$HOME"; docker info --format "{{.DockerRootDir}}"'])
        assert res.returncode == 0, res.stderr
        home, root = res.stdout.split()
        assert home == str(h.home)
        homes.add(home)
        roots.add(root)
    assert len(homes) == len(roots) == len(ns_hosts)
    # PostgreSQL of the machine answers on each host's own 127.0.0.1:5432 (forwarded).
    for h in ns_hosts:
        res = h.run(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5432"])
        assert res.returncode == 0, (h.name, res.stderr)
