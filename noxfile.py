# /// script
# dependencies = ["nox>=2025.10.14"]
# ///
"""Every task of this project: ``python3 -m nox -l`` lists them.

The default run (``python3 -m nox``) is what CI runs: the test suite on every
supported Python found on this machine, then the combined coverage gate, lint and
typing.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.needs_version = ">=2025.10.14"  # nox.options.download_python
nox.options.sessions = [
    "tests",
    "coverage",
    "lint",
    "typing",
    "package",
    "changelog",
    "docs",
]
# virtualenv ships with nox and seeds pip from its own wheels, so it works on a
# Python without ensurepip (Debian's python3 without python3-venv), where the
# stdlib venv backend fails.
nox.options.default_venv_backend = "virtualenv"
# A supported Python that is not installed skips its tests session instead of
# failing it. Nox's default turns it into an error whenever the CI variable is
# set; the coverage gate still runs over the versions that were found.
nox.options.error_on_missing_interpreters = False
# Test the interpreters this machine has; never fetch one over the network.
nox.options.download_python = "never"

ROOT = Path(__file__).parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The test extra pulls in every other extra (trio, hypercorn) and the test tools
# (pytest, coverage, uvicorn, httpx, h2): pyproject.toml is their one list.
PROJECT = ".[test]"
COVERAGE = "coverage[toml]>=7.10.3"  # 7.10.3: [run] patch = subprocess, fixed
# Linters are pinned: a new release adds rules and must not break CI by itself.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
# [nodejs]: a Node.js wheel, so pyright needs no system node and no npm download.
PYRIGHT = "pyright[nodejs]==1.1.414"
# The docs' tools, pinned like the linters: a new Sphinx may warn, and warnings
# fail the build. Sphinx 8.1 is the last that runs on every supported Python.
DOCS = ["sphinx==8.1.3", "furo==2025.12.19", "sphinx-argparse==0.6.1"]


def run_pytest(session: nox.Session, *default_args: str, measure: bool = False) -> None:
    """Install the project with the test tools and run pytest.

    Args:
        session: the nox session.
        *default_args: pytest arguments used when none are given after ``--``.
        measure: run under coverage, writing this Python's own data files so
            the ``coverage`` session can combine every version's data.
    """
    session.install(PROJECT)
    args = session.posargs or list(default_args)
    if not measure:
        session.run("python", "-m", "pytest", *args)
        return
    # Absolute, so child processes started in another directory write here too.
    data_file = ROOT / f".coverage.py{session.python}"
    for stale in ROOT.glob(f"{data_file.name}.*"):
        stale.unlink()
    session.run(
        "python",
        "-m",
        "coverage",
        "run",
        "-m",
        "pytest",
        *args,
        env={"COVERAGE_FILE": str(data_file)},
    )


# The whole suite runs on 3.11 and on 3.13 (hypercorn and asyncio behave
# differently from 3.12 on); 3.10 and 3.12 run the in-process tests only, which
# keeps CI within its time budget on two cores (each real-process run takes
# minutes, not seconds).
FULL_SUITE = frozenset({"3.11", "3.13"})
# The bench scripts' quick runs (the shape of their output, not speed) run once.
BENCH_PYTHON = "3.11"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite under coverage (pytest arguments go after ``--``).

    On Pythons outside ``FULL_SUITE``, the tests marked ``subprocess`` are left out;
    those marked ``bench`` run on ``BENCH_PYTHON`` only.
    """
    if session.python == BENCH_PYTHON:
        run_pytest(session, measure=True)
    elif session.python in FULL_SUITE:
        run_pytest(session, "-m", "not bench", measure=True)
    else:
        run_pytest(session, "-m", "not subprocess", measure=True)


@nox.session
def coverage(session: nox.Session) -> None:
    """Combine the data of every tests session and enforce fail_under."""
    session.install(COVERAGE)
    # Re-running this session alone reports the last combined data.
    if any(ROOT.glob(".coverage.*")):
        session.run("python", "-m", "coverage", "combine")
    session.run("python", "-m", "coverage", "report")


@nox.session
def lint(session: nox.Session) -> None:
    """Check lint rules and formatting with ruff."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check everything with mypy (strict); verify the public API's types."""
    # exceptiongroup: mypy checks as Python 3.10 whatever Python runs it.
    session.install(PROJECT, MYPY, PYRIGHT, "nox", "exceptiongroup>=1.2")
    session.run("python", "-m", "mypy", *session.posargs)
    # Checks the installed wheel: fails without py.typed, or on any public name
    # whose type is partly unknown.
    session.run(
        "pyright", "--verifytypes", "shutdown_scope", "--ignoreexternal", silent=True
    )


# The supported hypercorn minors (the hypercorn extra pins >=0.17,<0.19): the
# serving tests run against the newest release of each. Not a default session:
# each run installs the project anew and serves for about two minutes.
HYPERCORN_MINORS = ["0.17", "0.18"]


@nox.session
@nox.parametrize("minor", HYPERCORN_MINORS)
def hypercorn_versions(session: nox.Session, minor: str) -> None:
    """Run the serving tests against each supported hypercorn minor.

    Pytest arguments after ``--`` replace the default selection.
    """
    session.install(PROJECT)
    session.install(f"hypercorn~={minor}.0")  # the newest release of that minor
    session.run(
        "python", "-c", "import importlib.metadata as m; print(m.version('hypercorn'))"
    )
    if session.posargs:
        session.run("python", "-m", "pytest", *session.posargs)
        return
    tests = sorted(str(path) for path in (ROOT / "tests").glob("test_hypercorn*.py"))
    session.run("python", "-m", "pytest", "-q", *tests)
    serve = str(ROOT / "tests" / "test_serve_command.py")
    session.run("python", "-m", "pytest", "-q", serve, "-k", "hypercorn")


@nox.session
def examples(session: nox.Session) -> None:
    """Run the tests that drive the example programs."""
    run_pytest(session, "tests/test_examples.py", "tests/test_redis_consumer.py")


@nox.session
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, and import the wheel in a fresh venv."""
    session.install("build>=1.2", "twine>=6.1")
    dist = Path(session.create_tmp()) / "dist"
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    built = sorted(str(path) for path in dist.iterdir())
    session.run("twine", "check", "--strict", *built)
    (wheel,) = dist.glob("*.whl")
    venv = Path(session.create_tmp()) / "fresh"
    session.run("python", "-m", "venv", "--clear", str(venv))
    python = str(venv / "bin" / "python")
    extras = "trio,hypercorn,uvicorn,testing,prometheus"
    session.run(python, "-m", "pip", "install", "-q", f"{wheel}[{extras}]")
    session.run(python, str(ROOT / "tests" / "import_everything.py"), external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs into docs/_build/html; any warning fails the build.

    The build first runs real shutdowns (docs/_ext/real_shutdowns.py) for the
    reports and timelines the pages show. Sphinx arguments go after ``--``.
    """
    # The integrations' extras: autodoc imports every public module, and the
    # shutdowns run the demo's hypercorn server.
    # pytest: autodoc imports the test kit's pytest plugin.
    session.install(
        ".[trio,hypercorn,uvicorn,testing,prometheus]", "pytest>=8.0", *DOCS
    )
    out = ROOT / "docs" / "_build" / "html"
    args = session.posargs or ["-q"]
    session.run(
        "python", "-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-b", "html",
        *args, str(ROOT / "docs"), str(out),
    )  # fmt: skip
    session.log(f"the site: {out / 'index.html'}")


@nox.session
def changelog(session: nox.Session) -> None:
    """Check the changelog fragments: towncrier renders them (``--draft``).

    It fails on a fragment of an unknown type, or on two for one issue and type
    without a counter (``12.feature.1.md``, ``12.feature.2.md``).
    """
    session.install("towncrier==26.9.0")
    session.run("towncrier", "build", "--draft", "--version", "next", silent=True)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo program (its arguments go after ``--``)."""
    session.install(PROJECT)
    session.run("python", "examples/demo.py", *session.posargs)


if __name__ == "__main__":
    nox.main()
