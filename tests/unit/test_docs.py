"""The README and the pages under docs/ link only to files that exist (and each page is linked from the
README's table)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_points_to_a_file_and_every_page_is_linked_from_the_readme() -> None:
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages
    broken = [
        f"{doc.relative_to(ROOT)} -> {target}"
        for doc in [ROOT / "README.md", *pages]
        for target in LINK.findall(doc.read_text())
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert not broken, broken
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in pages if f"docs/{p.name}" not in readme] == []
