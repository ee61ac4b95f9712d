"""The launcher's runtime directory under hostile conditions, driven directly.

``RuntimeDir`` is called in this process (real directories, real sockets); a
swap timed exactly at ``bind`` is made in a child by an audit hook, which would
otherwise stay installed in the test process. Tests of the launcher itself, run
as a subprocess, are in tests/test_launcher_access.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shutdown_scope._launcher._runtime_dir import RuntimeDir

NOBODY = 65534


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as TMPDIR (TEMP and TMP unset): where the directory goes."""
    for name in ("TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def open_fds() -> set[str]:
    return {x.name for x in Path("/proc/self/fd").iterdir()}


def test_a_removed_working_directory_does_not_stop_the_launcher(
    tmpdir_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from a directory removed since: TMPDIR is used (it was an error)."""
    gone = tmpdir_env / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    runtime = RuntimeDir()
    try:
        assert Path(runtime.path).parent == tmpdir_env
    finally:
        runtime.close()
    assert list(tmpdir_env.iterdir()) == []


@pytest.mark.subprocess
def test_the_launcher_starts_in_a_removed_working_directory(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    launch = [sys.executable, "-m", "shutdown_scope", "run", "--log-format", "json"]
    done = subprocess.run(
        ["/bin/sh", "-c", script, "-", str(gone), *launch, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert "generation_spawned" in events
    assert list(tmp_path.iterdir()) == []


def test_a_tmpdir_others_may_change_is_refused(tmpdir_env: Path) -> None:
    """Writable by all and not sticky: another user could swap our directory."""
    tmpdir_env.chmod(0o777)
    with pytest.raises(OSError, match="writable by other users and not sticky") as e:
        RuntimeDir()
    assert e.value.errno == 1  # EPERM: not a missing directory
    assert "set TMPDIR to a directory only root and this user can change" in str(
        e.value
    )
    assert list(tmpdir_env.iterdir()) == []


def test_a_tmpdir_owned_by_another_user_is_refused(tmpdir_env: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the directory to another uid")
    inner = tmpdir_env / "theirs"
    inner.mkdir(mode=0o755)
    os.chown(inner, NOBODY, NOBODY)
    os.environ["TMPDIR"] = str(inner)  # tmpdir_env's monkeypatch restores it
    with pytest.raises(OSError, match=f"uid {NOBODY} owns {inner}"):
        RuntimeDir()
    assert list(inner.iterdir()) == []


def test_a_tmpdir_reached_through_a_symlink_is_checked_where_it_leads(
    tmpdir_env: Path,
) -> None:
    target = tmpdir_env / "open"
    target.mkdir()
    target.chmod(0o777)
    (tmpdir_env / "link").symlink_to(target)
    os.environ["TMPDIR"] = str(tmpdir_env / "link")
    with pytest.raises(OSError, match=f"{target} is writable by other users"):
        RuntimeDir()


def test_a_removed_runtime_directory_is_made_again(tmpdir_env: Path) -> None:
    runtime = RuntimeDir()
    first = runtime.path
    shutil.rmtree(first)
    sock, path = runtime.bind_datagram("notify-1")
    with sock:
        assert runtime.path != first
        assert Path(path).parent == Path(runtime.path)
        assert stat.S_ISSOCK(Path(path).lstat().st_mode)
        assert stat.S_IMODE(Path(runtime.path).stat().st_mode) == 0o700
    runtime.close()
    assert list(tmpdir_env.iterdir()) == []


def test_a_runtime_directory_opened_to_others_is_left_alone(tmpdir_env: Path) -> None:
    """Its mode changed (0755): a new one is used; the other is not removed."""
    runtime = RuntimeDir()
    first = Path(runtime.path)
    first.chmod(0o755)
    sock, path = runtime.bind_datagram("notify-1")
    sock.close()
    assert Path(path).parent != first
    runtime.close()
    assert list(tmpdir_env.iterdir()) == [first]
    assert list(first.iterdir()) == []


def test_a_socket_that_cannot_be_bound_is_an_error_and_leaks_no_fd(
    tmpdir_env: Path,
) -> None:
    runtime = RuntimeDir()
    before = open_fds()
    with pytest.raises(OSError, match="too long"):
        runtime.bind_datagram("n" * 200)  # past sun_path's 108 bytes
    assert open_fds() == before
    runtime.close()
    assert list(tmpdir_env.iterdir()) == []


def test_sockets_left_are_removed_with_the_directory(tmpdir_env: Path) -> None:
    runtime = RuntimeDir()
    socks = [runtime.bind_datagram(f"notify-{n}")[0] for n in (1, 2)]
    runtime.remove(str(Path(runtime.path) / "notify-1"))
    runtime.remove(str(tmpdir_env / "elsewhere" / "notify-2"))  # not ours: ignored
    assert [x.name for x in Path(runtime.path).iterdir()] == ["notify-2"]
    runtime.close()
    for sock in socks:
        sock.close()
    assert list(tmpdir_env.iterdir()) == []


# At the bind, the directory is moved away and another made in its place
# (``swaps`` times): the socket lands in the stranger's directory.
SWAP_AT_BIND = """
import json, os, sys
from shutdown_scope._launcher._runtime_dir import RuntimeDir

swaps = int(sys.argv[1])
runtime = RuntimeDir()
made = [runtime.path]
swapped = []

def swap(event, args):
    if event == "socket.bind" and len(swapped) < swaps:
        path = runtime.path
        os.rename(path, path + ".moved")
        os.mkdir(path, 0o700)
        swapped.append(path)

sys.addaudithook(swap)
try:
    sock, path = runtime.bind_datagram("notify-1")
except OSError as error:
    result = {"error": str(error)}
else:
    sock.close()
    result = {"path": path}
result["swapped"] = swapped
runtime.close()
print(json.dumps(result))
"""


def swap_at_bind(tmp_path: Path, swaps: int) -> tuple[str, str, list[str]]:
    """The socket's path (or ""), the error (or ""), the directories swapped."""
    done = subprocess.run(
        [sys.executable, "-c", SWAP_AT_BIND, str(swaps)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    result = json.loads(done.stdout)
    return result.get("path", ""), result.get("error", ""), result["swapped"]


@pytest.mark.subprocess
def test_a_directory_swapped_during_the_bind_is_not_used(tmp_path: Path) -> None:
    path, error, (swapped,) = swap_at_bind(tmp_path, 1)
    assert not error
    assert Path(path).parent != Path(swapped)
    assert Path(path).parent.parent == tmp_path
    # The bind went into the stranger's directory; what it holds is its own.
    assert [x.name for x in Path(swapped).iterdir()] == ["notify-1"]
    # Ours, moved away by the stranger: not followed, so nothing went into it.
    assert list(Path(swapped + ".moved").iterdir()) == []


@pytest.mark.subprocess
def test_a_directory_swapped_at_every_bind_is_an_error(tmp_path: Path) -> None:
    path, error, swapped = swap_at_bind(tmp_path, 2)
    assert not path
    assert "keeps being replaced" in error
    assert len(swapped) == 2
