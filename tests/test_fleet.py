"""The fleet rehearsal: a rolling update of replicas behind a real HAProxy.

``bench/fleet.py --quick --only shutdown-scope --json PATH`` runs three replicas
(``shutdown-scope run --listen ADDR -- shutdown-scope serve ...``), each in a
network namespace of its own where it can, behind HAProxy with
``examples/deploy/haproxy.cfg``, and replaces them one by one under keep-alive
load: a new one, UP in HAProxy's stats socket, then SIGTERM to an old one. The
test reads its JSON: what the clients got, each replica's exit code, and what
HAProxy's stats socket said while the old replicas still ran. The last test
runs the bench's other row (plain uvicorn replicas) and reads its table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _spawn import Child

ROOT = Path(__file__).parent.parent
BENCH = str(ROOT / "bench" / "fleet.py")
CONFIG = ROOT / "examples" / "deploy" / "haproxy.cfg"


def find_haproxy() -> str | None:
    """As bench/_haproxy.py finds it: on PATH, or in /usr/sbin."""
    found = shutil.which("haproxy")
    if found is None and os.access("/usr/sbin/haproxy", os.X_OK):
        found = "/usr/sbin/haproxy"
    return found


HAPROXY = find_haproxy()

needs_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="no haproxy program: install Debian's haproxy package"
    " (apt-get install haproxy; .ci/run does as root)",
)


@pytest.mark.subprocess
@needs_haproxy
def test_the_haproxy_template_is_a_valid_configuration(tmp_path: Path) -> None:
    assert HAPROXY is not None
    env = {
        **os.environ,
        "FRONTEND": "127.0.0.1:8080",
        "STATS_SOCKET": str(tmp_path / "stats.sock"),
        "CHECK_PATH": "/readyz",
        **{f"REPLICA{n}": f"10.0.0.{4 * n + 2}:8000" for n in range(1, 7)},
    }
    checked = subprocess.run(
        [HAPROXY, "-c", "-f", str(CONFIG)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.subprocess
@needs_haproxy
def test_a_rolling_update_behind_haproxy_fails_no_request(tmp_path: Path) -> None:
    result = tmp_path / "fleet.json"
    argv = (BENCH, "--quick", "--only", "shutdown-scope", "--json", str(result))
    with Child(*argv, timeout=90) as child:
        code = child.finish()
    assert code == 0, child.output
    [outcome] = json.loads(result.read_text())
    assert outcome["server"] == "shutdown-scope"
    assert outcome["requests"] > 0, child.output
    assert outcome["statuses"] == {"200": outcome["requests"]}, child.output
    failures = ("failed", "lost", "refused", "closed_idle")
    assert {name: outcome[name] for name in failures} == dict.fromkeys(failures, 0)
    replicas = outcome["replicas"]
    assert [r["role"] for r in replicas] == ["old"] * 3 + ["new"] * 3
    assert len({r["address"] for r in replicas}) == 6
    assert [r["exit_code"] for r in replicas] == [0] * 6, child.output
    for replica in replicas:
        # HAProxy said DOWN (two failed checks of /readyz, which answers 503
        # from the SIGTERM on) while the process still ran: the listener was
        # still open when the load balancer stopped sending to it.
        assert replica["down_while_running"] is True, replica
        assert replica["down_after"] < replica["exit_after"], replica
        # Each served through HAProxy, and HAProxy never failed to connect.
        assert replica["haproxy"]["hrsp_2xx"] > 0, replica
        assert replica["haproxy"]["econ"] == 0, replica
        assert replica["haproxy"]["wretr"] == 0, replica
    if outcome["network"] == "netns":  # and they are gone (ip netns del)
        names = [path.name for path in Path("/run/netns").iterdir()]
        assert not [n for n in names if n.startswith(f"ssfleet-{child.proc.pid}-")]


@pytest.mark.subprocess
@needs_haproxy
def test_fleet_bench_quick_prints_the_table_and_the_goal() -> None:
    # The other row, plain uvicorn replicas: their failures are measured, not
    # asserted; the test above checks shutdown-scope's row in detail.
    with Child(BENCH, "--quick", "--only", "uvicorn", timeout=90) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    header = next(
        i
        for i, line in enumerate(child.lines)
        if line.split()[:2] == ["server", "network"]
    )
    columns = child.lines[header].split()
    row = dict(zip(columns, child.lines[header + 1].split(), strict=True))
    assert row["server"] == "uvicorn", output
    assert row["network"] in {"netns", "loopback"}, output
    assert int(row["requests"]) > 0, output
    failed = sum(int(row[name]) for name in ("not-200", "lost", "refused"))
    assert int(row["failed"]) == failed, output
    # uvicorn ends by re-raising the SIGTERM it stopped on: 128 + 15.
    assert row["exit-old"] == row["exit-new"] == "143,143,143", output
    goals = [line for line in child.lines if line.startswith("goal: ")]
    assert len(goals) == 1, output
    assert goals[0].startswith("goal: 0 failed requests: uvicorn "), output
    assert f"({row['failed']} failed of {row['requests']}: " in goals[0], output
