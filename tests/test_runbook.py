"""Every plainsail command in docs/runbook.md runs, in the order the runbook gives."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.support.deploy_env import DeployDir

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"


def runbook_commands() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), re.S)
    return [shlex.split(line, comments=True) for block in blocks
            for line in block.splitlines() if line.strip()]


def test_runbook_commands(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    v1 = d.builds.versions["v1"].tag
    assert d.run("deploy", d.builds.ref("v1")).code == 0
    assert d.run("deploy", d.builds.ref("v2")).code == 0
    ran = set()
    for argv in runbook_commands():
        if argv[0] == "git":
            continue  # step 7 builds a new commit: see test_build and test_deploy
        assert argv[0] == "plainsail", argv
        args = [a.replace("<TAG>", v1) for a in argv[1:]]
        if args[0] in ("build", "sign", "deploy"):
            # Exercised for real by test_build, test_sign_verify and test_deploy; here the
            # runbook's form of the command must parse.
            r = d.run(args[0], "--help")
        elif args[0] == "drill" and "--yes" not in args:
            r = d.run(*args)  # says what it would do and how long the service stops
            assert r.code == 2 and "--yes" in r.err, r.text
            ran.add("drill")
            continue
        elif args[0] == "recover":
            d.kill_mid_switch("slow")  # what recover is for: a deployer killed mid-switch
            r = d.run(*args)
            assert "RECOVERED" in r.out, r.text
        elif args[:2] == ["rollback", "--to"]:
            assert d.run("deploy", d.builds.ref("v2")).code == 0  # roll forward first
            r = d.run(*args)
        else:
            r = d.run(*args)
        assert r.code == 0, (args, r.text)
        ran.add(args[0])
    assert ran >= {"history", "status", "rollback", "logs", "lock", "recover", "build", "sign",
                   "deploy"}
    assert '"version": "1"' in d.get()[1]
