"""The changelog fragments are named as changelog.d/README.md says.

towncrier (``nox -s changelog``) accepts some names that lose the entry: a
``misc`` fragment renders as its issue number only, and a letter counter
(``15.feature.h1.md``) clashes with a second fragment of that issue and type.
"""

from __future__ import annotations

import re
from pathlib import Path

FRAGMENTS = Path(__file__).resolve().parent.parent / "changelog.d"
NAME = re.compile(r"(?:\d+|\+[a-z0-9-]+)\.(?:feature|bugfix|doc|removal)(?:\.\d+)?\.md")


def test_every_fragment_is_named_issue_type_counter() -> None:
    names = sorted(p.name for p in FRAGMENTS.iterdir() if p.name != "README.md")
    assert names, "no fragments found"
    assert [name for name in names if not NAME.fullmatch(name)] == []
