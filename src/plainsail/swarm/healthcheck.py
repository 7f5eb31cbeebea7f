"""Swarm's own health check of each task, derived from `health.*` (no I/O).

Swarm puts a task into `tasks.<service>` (what the proxy sends requests to) once it runs,
or, when the task has a health check, once that check passed; a task whose check keeps
failing is stopped and the update fails. So with a health check that asks what the deploy's
gate asks, a release that fails it never receives a request, and the update stops by
itself. plainsail's own gate still probes every task afterwards.

The check runs inside the task, with an HTTP client of the image: plainsail looks once per
deploy for curl, wget, python3 or node (a throw-away container of the new image, no network)
and mounts a small script (a Docker config at HEALTH_PATH) that does one GET of
`http://127.0.0.1:<app.port><health.path>` with it. An image with a HEALTHCHECK of its own
keeps it; an image with none of those clients (or no /bin/sh) gets no check, and the deploy
says so.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plainsail.config.model import Config

HEALTH_PATH = "/plainsail-health.sh"
LABEL = "plainsail.service"  # service.LABEL_SERVICE
CLIENTS = ("curl", "wget", "python3", "node", "nc")
RETRIES = 3

# Each client prints the body, a newline, then the status (as curl's -w does below).
_PY = ("import sys,urllib.request as u\n"
       "try:\n"
       " r=u.urlopen(sys.argv[1],timeout=float(sys.argv[2]));c,b=r.status,r.read()\n"
       "except u.HTTPError as e:\n"
       " c,b=e.code,e.read()\n"
       "except Exception as e:\n"
       " print('no answer:',type(e).__name__);sys.exit(1)\n"
       "sys.stdout.buffer.write(b+b'\\n'+str(c).encode())\n")
_JS = ("const h=require('http');const q=h.get(process.argv[1],{timeout:process.argv[2]*1000},"
       "r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>{process.stdout.write(b+'\\n'+"
       "r.statusCode)})});q.on('timeout',()=>q.destroy(new Error('timeout')));"
       "q.on('error',e=>{console.log('no answer:',e.message);process.exit(1)})")

# Arguments: CLIENT URL STATUS TEXT TIMEOUT. Prints the status only (never the body).
HEALTH_SCRIPT = f"""\
# plainsail's health check for Swarm tasks: one GET of URL with CLIENT; healthy when the
# answer's status is STATUS (wget: any 2xx) and, unless TEXT is empty, its body holds TEXT.
client=$1 url=$2 status=$3 text=$4 timeout=$5
case $client in
  curl) out=$(curl -s -m "$timeout" -w '\\n%{{http_code}}' "$url") \\
          || {{ echo "no answer"; exit 1; }};;
  wget) out=$(wget -q -T "$timeout" -O - "$url" && echo && echo 2xx) \\
          || {{ echo "no 2xx answer"; exit 1; }};;
  python3) out=$(python3 -c {shlex.quote(_PY)} "$url" "$timeout") \\
          || {{ echo "$out"; exit 1; }};;
  node) out=$(node -e {shlex.quote(_JS)} "$url" "$timeout") \\
          || {{ echo "$out"; exit 1; }};;
  nc) hp=${{url#http://}}; path=/${{hp#*/}}; hp=${{hp%%/*}}
      out=$(printf 'GET %s HTTP/1.0\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' \\
              "$path" "$hp" | nc -w "$timeout" "${{hp%:*}}" "${{hp##*:}}") \\
          || {{ echo "no answer"; exit 1; }}
      line=${{out%%
*}}; line=${{line#* }}; line=${{line%% *}}
      out="$out
${{line%"$(printf '\\r')"}}";;
  *) echo "unknown client $client"; exit 1;;
esac
code=${{out##*
}}
body=${{out%
*}}
case $code in
  "$status") ;;
  2xx) case $status in 2??) ;; *) echo "status 2xx, wanted $status"; exit 1;; esac;;
  *) echo "status $code, wanted $status"; exit 1;;
esac
if [ -n "$text" ]; then
  case $body in
    *"$text"*) ;;
    *) echo "status $code, the body lacks the expected text"; exit 1;;
  esac
fi
echo "status $code"
"""

# Which client the image has: the first of CLIENTS that is on its PATH and works (a refused
# connection to 127.0.0.1:9 is fine; not found, not executable or killed by a signal, such
# as a static busybox wget crashing where it finds no NSS, is not), or nothing.
CLIENT_SCRIPT = """\
ok() { "$@" >/dev/null 2>&1 </dev/null; [ $? -lt 126 ]; }
u=http://127.0.0.1:9/
for c in curl wget python3 node nc; do
  command -v "$c" >/dev/null 2>&1 || continue
  case $c in
    curl) ok curl -s -m 2 -o /dev/null "$u";;
    wget) ok wget -q -T 2 -O /dev/null "$u";;
    python3) ok python3 -c 'import urllib.request';;
    node) ok node -e 'require("http")';;
    nc) ok nc -w 1 127.0.0.1 9;;
  esac && { echo "$c"; exit 0; }
done
"""


@dataclass(frozen=True)
class Health:
    """A task's health check as Swarm keeps it (ContainerSpec.Healthcheck): `test` None is
    none set (the image's own, if any, applies), ("NONE",) is none at all."""

    test: tuple[str, ...] | None = None
    interval: float = 0.0
    timeout: float = 0.0
    start_period: float = 0.0
    retries: int = 0

    @property
    def ours(self) -> bool:
        return bool(self.test) and HEALTH_PATH in " ".join(self.test or ())


def config_name() -> str:
    """The Docker config holding the script: named for its content (configs cannot change)."""
    return "plainsail-health-" + hashlib.sha256(HEALTH_SCRIPT.encode()).hexdigest()[:12]


def config_argv() -> list[str]:
    return ["docker", "config", "create", "--label", f"{LABEL}=*", config_name(), "-"]


def config_inspect_argv() -> list[str]:
    return ["docker", "config", "inspect", "--format", "{{.ID}}", config_name()]


def client_argv(image: str) -> list[str]:
    """A throw-away container of the image, on no network, naming its HTTP client."""
    return ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image,
            "-c", CLIENT_SCRIPT]


def own(image_config: Mapping[str, Any]) -> bool:
    """Does the image bring a HEALTHCHECK of its own?"""
    test = (image_config.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def wanted(cfg: Config, client: str) -> Health:
    """The check plainsail sets for `health.*` with `client`: every `health.interval`;
    failures within the gate's patience (attempts x interval) do not count yet."""
    h = cfg.health
    cmd = shlex.join(["/bin/sh", HEALTH_PATH, client,
                      f"http://127.0.0.1:{cfg.app.port}{h.path}", str(h.status),
                      h.body_contains or "", f"{h.timeout:g}"])
    return Health(("CMD-SHELL", cmd), interval=h.interval, timeout=h.timeout + 1,
                  start_period=h.attempts * h.interval, retries=RETRIES)


def parse(container_spec: Mapping[str, Any]) -> Health | None:
    """The Health of a ContainerSpec, None when it sets none."""
    hc = container_spec.get("Healthcheck")
    if not hc:
        return None
    test = hc.get("Test")
    return Health(tuple(str(x) for x in test) if test else None,
                  interval=int(hc.get("Interval") or 0) / 1e9,
                  timeout=int(hc.get("Timeout") or 0) / 1e9,
                  start_period=int(hc.get("StartPeriod") or 0) / 1e9,
                  retries=int(hc.get("Retries") or 0))


def _shell(test: tuple[str, ...]) -> str:
    """A test as the one shell command `--health-cmd` takes."""
    return test[1] if test[0] == "CMD-SHELL" else shlex.join(test[1:])


def args(health: Health | None, *, update: bool) -> list[str]:
    """The `docker service create/update` options that set `health`. An update always
    sets every part, so going back to a spec without a check removes plainsail's."""
    if health is not None and health.test == ("NONE",):
        return ["--no-healthcheck"]
    if health is None or not health.test:
        if not update:
            return []
        return ["--health-cmd", "", "--health-interval", "0s", "--health-timeout", "0s",
                "--health-start-period", "0s", "--health-retries", "0"]
    return ["--health-cmd", _shell(health.test),
            "--health-interval", f"{health.interval:g}s",
            "--health-timeout", f"{health.timeout:g}s",
            "--health-start-period", f"{health.start_period:g}s",
            "--health-retries", str(health.retries)]
