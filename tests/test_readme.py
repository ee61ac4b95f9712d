"""Every code block of README.md is run (python) or checked (sh), so it cannot drift.

A ``python`` block is classified by what it defines:

- ``main`` and a last line ``run(main...)``: a program. Its ``main`` runs on each
  backend it supports, with the README's placeholders (``queue``, ``app``, ...)
  filled by the fixtures below; once the fixtures it uses are ready, it gets a real
  SIGTERM and must stop cleanly.
- an async function whose first parameter is ``token``: a service, started in a
  scope and stopped; if it listens for a signal, it gets that signal first.
- an async function of ``(scope, receive, send)``: an ASGI app, served by
  ``shutdown_scope.hypercorn.serve`` to a real client across a shutdown.
- statements that set up logging: run, then a record must come out as JSON.

Each ``sh`` command must exist: ``shutdown-scope ...`` lines parse with the
command's own parser, ``nox -s S`` names a session, ``python examples/x.py`` a
file. ``text`` blocks are output, shown not run. Anything else fails with how to
mark it: ``<!-- readme-test: skip REASON -->`` on the line before the block.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from shutdown_scope import ShutdownReport, ShutdownToken, graceful_scope
from shutdown_scope._launcher._parser import command_parser

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
MARK = re.compile(r"<!--\s*readme-test:\s*skip\s+(\S.*?)\s*-->\s*$")
# The README binds the usual public address and port; a test binds a free one.
# Its announce delay, seconds of real time on asyncio, is cut short.
SUBSTITUTIONS = {
    '"0.0.0.0:8000"': '"127.0.0.1:0"',
    'host="0.0.0.0", port=8000': 'host="127.0.0.1", port=0',
    "announce_delay=5,": "announce_delay=0.05,",
}
HOW_TO_MARK = (
    "add a case to tests/test_readme.py, or mark the block on the line before it"
    " with <!-- readme-test: skip REASON --> (sparingly)"
)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    skip: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang or 'no language'})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for found in FENCE.finditer(text):
        before = text[: found.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        line = text.count("\n", 0, found.start()) + 1
        blocks.append(Block(found[1], found[2], line, mark[1] if mark else None))
    return blocks


BLOCKS = readme_blocks()


def blocks_of(lang: str) -> list[Any]:
    return [
        pytest.param(b, id=f"line{b.line}")
        for b in BLOCKS
        if b.lang == lang and b.skip is None
    ]


def test_every_block_has_a_known_kind() -> None:
    assert len(BLOCKS) >= 8, "the fence pattern no longer matches README.md"
    unknown = [
        str(b) for b in BLOCKS if b.skip is None and b.lang not in KINDS_RUN_OR_SHOWN
    ]
    assert not unknown, f"{unknown}: a block of no known kind; {HOW_TO_MARK}"


KINDS_RUN_OR_SHOWN = {"python", "sh", "text"}


# -- the placeholders ---------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    id: int


class Pool:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


@dataclass
class Placeholders:
    """The README's undefined names, and what each saw."""

    queue: MemoryObjectReceiveStream[Message]
    handled: list[int] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    reloads: int = 0
    app_started: bool = False
    app_stopped: bool = False

    MESSAGES = (1, 2)

    def names(self) -> dict[str, object]:
        return {
            "open_pool": self.open_pool,
            "handle": self.handle,
            "queue": self.queue,
            "reload_config": self.reload_config,
            "app": self.app,
            "run_db_pool": self.run_db_pool,
        }

    def ready(self, used: set[str]) -> bool:
        checks = {
            "queue": self.handled == list(self.MESSAGES),
            "open_pool": bool(self.pools),
            "run_db_pool": bool(self.pools),
            "app": self.app_started,
        }
        return all(ok for name, ok in checks.items() if name in used)

    async def open_pool(self) -> Pool:
        self.pools.append(Pool())
        return self.pools[-1]

    async def handle(self, pool: Pool, message: Message) -> None:
        assert not pool.closed, "handled with a closed pool"
        await anyio.sleep(0.01)
        self.handled.append(message.id)

    def reload_config(self) -> None:
        self.reloads += 1

    async def run_db_pool(
        self,
        token: ShutdownToken,  # noqa: ARG002 -- a service receives its token
        *,
        task_status: Any = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        pool = await self.open_pool()
        task_status.started(pool)
        try:
            await anyio.sleep_forever()
        finally:
            await pool.close()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                self.app_started |= kind == "startup"
                self.app_stopped |= kind == "shutdown"
                await send({"type": f"{message['type']}.complete"})
                if kind == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def placeholders() -> Any:
    send, receive = anyio.create_memory_object_stream[Message](10)
    for n in Placeholders.MESSAGES:
        send.send_nowait(Message(n))
    with send, receive:
        yield Placeholders(receive)


def reports(caplog: pytest.LogCaptureFixture) -> list[ShutdownReport]:
    records = [r for r in caplog.records if getattr(r, "event", None) == "report"]
    return [r.args[0] for r in records if isinstance(r.args, tuple)]  # type: ignore[misc]


def compile_block(block: Block) -> tuple[ast.Module, set[str]]:
    code = block.code
    for public, local in SUBSTITUTIONS.items():
        code = code.replace(public, local)
    tree = ast.parse(code, filename=str(block))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return tree, used


def functions(tree: ast.Module) -> dict[str, ast.AsyncFunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.AsyncFunctionDef)}


def run_call(tree: ast.Module) -> ast.Call | None:
    """The block's last statement when it is ``run(main, ...)``."""
    last = tree.body[-1] if tree.body else None
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)):
        return None
    call = last.value
    func, args = call.func, call.args
    named_run = isinstance(func, ast.Name) and func.id == "run"
    is_main = bool(args) and isinstance(args[0], ast.Name) and args[0].id == "main"
    return call if named_run and is_main else None


def execute(tree: ast.Module, block: Block, names: dict[str, object]) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme", **names}
    exec(compile(tree, str(block), "exec"), namespace)  # noqa: S102 -- the README's own code
    return namespace


# -- python blocks ------------------------------------------------------------------


@pytest.mark.parametrize("block", blocks_of("python"))
def test_python_block_is_a_known_kind(block: Block) -> None:
    tree, _ = compile_block(block)
    defined = functions(tree)
    program = "main" in defined and run_call(tree) is not None
    service = any(firsts(fn) == ["token"] for fn in defined.values())
    asgi = any(firsts(fn) == ["scope", "receive", "send"] for fn in defined.values())
    assert program or service or asgi or is_setup(tree), (
        f"{block}: neither a program (main and run(main)), a service (first"
        f" parameter token), an ASGI app nor logging setup; {HOW_TO_MARK}"
    )


def is_setup(tree: ast.Module) -> bool:
    """Statements that set up logging and define nothing to run."""
    defines = any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in tree.body
    )
    return not defines and "logging" in ast.unparse(tree)


SETUPS = [p for p in blocks_of("python") if is_setup(compile_block(p.values[0])[0])]


@pytest.mark.parametrize("block", SETUPS)
def test_logging_setup_gives_json_events(
    block: Block, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("shutdown_scope")
    before = list(logger.handlers)
    try:
        execute(compile_block(block)[0], block, {})
        logger.warning("x", extra={"event": "readme"})
    finally:
        logger.handlers[:] = before
    line = capsys.readouterr().err.splitlines()[-1]
    assert json.loads(line)["event"] == "readme", line


def firsts(fn: ast.AsyncFunctionDef) -> list[str]:
    names = [a.arg for a in fn.args.args]
    return names[:1] if names[:1] == ["token"] else names[:3]


PROGRAMS = [p for p in blocks_of("python") if run_call(compile_block(p.values[0])[0])]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("block", PROGRAMS)
def test_program_stops_cleanly_on_sigterm(
    block: Block,
    backend: str,
    placeholders: Placeholders,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tree, used = compile_block(block)
    call = run_call(tree)
    assert call is not None
    options = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    if "uvicorn" in used and backend == "trio":
        pytest.skip("uvicorn runs on asyncio only")
    tree.body.pop()  # run(main): driven here instead, with a trigger
    namespace = execute(tree, block, placeholders.names())
    assert set(options) <= {"backend"}, options

    async def drive() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(namespace["main"])
            with anyio.fail_after(20):
                while not placeholders.ready(used):  # noqa: ASYNC110 -- many conditions
                    await anyio.sleep(0.01)
            signal.raise_signal(signal.SIGTERM)

    caplog.set_level(logging.INFO, "shutdown_scope")
    anyio.run(drive, backend=backend)
    (report,) = reports(caplog)
    assert report.clean, report
    assert report.signal == signal.SIGTERM
    assert all(pool.closed for pool in placeholders.pools)
    if "queue" in used:  # each message handled once: none lost, none repeated
        assert placeholders.handled == list(placeholders.MESSAGES)
    if "app" in used:
        assert placeholders.app_stopped


SERVICES = [
    p
    for p in blocks_of("python")
    if any(
        firsts(f) == ["token"]
        for f in functions(compile_block(p.values[0])[0]).values()
    )
    and not run_call(compile_block(p.values[0])[0])
]


@pytest.mark.parametrize("block", SERVICES)
@pytest.mark.anyio
async def test_service_runs_and_stops(block: Block, placeholders: Placeholders) -> None:
    tree, used = compile_block(block)
    namespace = execute(tree, block, placeholders.names())
    (name,) = [n for n, f in functions(tree).items() if firsts(f) == ["token"]]
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        scope.start_soon(namespace[name])
        await anyio.wait_all_tasks_blocked()
        if "SIGHUP" in block.code:
            signal.raise_signal(signal.SIGHUP)
            with anyio.fail_after(5):
                while not placeholders.reloads:  # noqa: ASYNC110 -- a plain counter
                    await anyio.sleep(0.01)
        scope.request_shutdown()
    assert scope.report.clean, scope.report
    if "reload_config" in used:
        assert placeholders.reloads == 1


APPS = [
    p
    for p in blocks_of("python")
    if any(
        firsts(f) == ["scope", "receive", "send"]
        for f in functions(compile_block(p.values[0])[0]).values()
    )
]


@pytest.mark.parametrize("block", APPS)
@pytest.mark.anyio
async def test_asgi_app_serves_across_a_shutdown(
    block: Block, placeholders: Placeholders
) -> None:
    from hypercorn.config import Config

    from shutdown_scope.hypercorn import serve

    tree, _ = compile_block(block)
    namespace = execute(tree, block, placeholders.names())
    (name,) = [
        n
        for n, f in functions(tree).items()
        if firsts(f) == ["scope", "receive", "send"]
    ]
    config = Config()
    config.bind = ["127.0.0.1:0"]
    body = b""
    async with graceful_scope(signals=(), hard_exit=False, drain_timeout=10) as scope:
        (url,) = await scope.start(serve, namespace[name], config)
        async with httpx.AsyncClient() as client, client.stream("GET", url) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                body += chunk
                if scope.token.reason is None:
                    scope.request_shutdown()
    assert scope.report.clean, scope.report
    assert body.startswith(b"data: tick\n\n"), body
    assert body.endswith(b"event: bye\ndata: bye\n\n"), body


# -- sh blocks ----------------------------------------------------------------------


def commands(block: Block) -> list[list[str]]:
    found = []
    for line in block.code.splitlines():
        for command in line.split("&&"):
            words = shlex.split(command, comments=True)
            if words:
                found.append(words)
    return found


NOX_SESSIONS = set(
    re.findall(r"^def (\w+)\(session", (ROOT / "noxfile.py").read_text(), re.MULTILINE)
)


@pytest.mark.parametrize("block", blocks_of("sh"))
def test_sh_commands_exist(block: Block) -> None:
    for words in commands(block):
        check_command(block, words)


def check_command(block: Block, words: list[str]) -> None:
    where = f"{block}: {shlex.join(words)}"
    if words[:3] in (
        ["python3", "-m", "shutdown_scope"],
        ["python", "-m", "shutdown_scope"],
    ):
        words = ["shutdown-scope", *words[3:]]
    if words[0] == "shutdown-scope":
        argv = words[1:]
        if argv[:1] == ["run"] and "--" in argv:
            command = argv[argv.index("--") + 1 :]
            assert command, f"{where}: run has no command after --"
            argv = argv[: argv.index("--")]
        try:
            command_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{where}: the command's parser refuses it ({exc.code})")
        return
    if words[:3] in (["python3", "-m", "nox"], ["python", "-m", "nox"]):
        sessions = [w for i, w in enumerate(words) if i and words[i - 1] == "-s"]
        missing = set(sessions) - NOX_SESSIONS
        assert not missing, f"{where}: no nox session {sorted(missing)}"
        return
    if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
        return
    if words[0] in ("python", "python3") and words[1:2] and words[1].endswith(".py"):
        assert (ROOT / words[1]).is_file(), f"{where}: no such file"
        return
    pytest.fail(f"{where}: a command this test does not know; {HOW_TO_MARK}")


def test_every_launcher_event_is_listed_in_the_readme() -> None:
    """Each ``event`` name the launcher logs is in the ``--log-format`` row."""
    package = Path(__file__).parent.parent / "shutdown_scope" / "_launcher"
    pattern = re.compile(
        r'event\(\s*"(\w+)"|"event":\s*"(\w+)"|\.event = "(\w+)"'
        r'|log\(\s*[\w.]+,\s*"(\w+)"'
    )
    names = {
        next(group for group in found if group)
        for module in package.glob("*.py")
        for found in pattern.findall(module.read_text())
    }
    assert {"started", "child_exited", "reload_succeeded"} <= names  # it finds them
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "`--log-format" in line)
    assert sorted(n for n in names if f"`{n}`" not in row) == []
