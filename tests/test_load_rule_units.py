"""The rule the proxy's load tests judge hey's report by (tests/support/proxy_env.py):
every answer 200, and no error but at most CLOSES_ALLOWED connections that the proxy
closed without an answer (docs/proxy.md, "What a switch costs a client")."""

from __future__ import annotations

import pytest

from tests.support.proxy_env import CLOSES_ALLOWED, assert_served, connection_closes

URL = "http://127.0.0.1:40001/"


def report(codes: dict[int, int], errors: list[str]) -> str:
    lines = ["Summary:", "  Requests/sec:\t100.0", "", "Status code distribution:"]
    lines += [f"  [{code}]\t{n} responses" for code, n in codes.items()]
    if errors:
        lines += ["", "Error distribution:", *(f"  {e}" for e in errors)]
    return "\n".join(lines) + "\n"


EOF_LINE = f'[1]\tGet "{URL}": EOF'
RESET_LINE = f'[1]\tGet "{URL}": read tcp 127.0.0.1:5->127.0.0.1:40001: read: connection ' \
    "reset by peer"


def test_a_clean_report_passes_and_counts_the_answers() -> None:
    assert assert_served(report({200: 700}, []), minimum=500) == {"200": 700}


@pytest.mark.parametrize("line", [EOF_LINE, RESET_LINE])
def test_one_connection_closed_without_an_answer_is_allowed(line: str) -> None:
    assert CLOSES_ALLOWED == 1
    assert connection_closes(line) == 1
    assert assert_served(report({200: 700}, [line])) == {"200": 700}


@pytest.mark.parametrize("codes,errors", [
    ({200: 700}, [EOF_LINE, RESET_LINE]),                      # two closes
    ({200: 700}, [EOF_LINE.replace("[1]", "[2]")]),             # two closes on one line
    ({200: 699, 502: 1}, []),                                   # an answer but 200
    ({200: 700, 503: 1}, [EOF_LINE]),
    ({200: 700}, [f'[1]\tGet "{URL}": dial tcp 127.0.0.1:40001: connect: connection '
                  "refused"]),                                  # nothing listened
    ({200: 700}, [EOF_LINE, f'[1]\tGet "{URL}": context deadline exceeded '
                  "(Client.Timeout exceeded while awaiting headers)"]),
    ({200: 40}, []),                                            # too few answers
])
def test_anything_else_fails(codes: dict[int, int], errors: list[str]) -> None:
    with pytest.raises(AssertionError):
        assert_served(report(codes, errors), minimum=100)
