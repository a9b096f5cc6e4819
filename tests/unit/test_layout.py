"""The layout's rules, checked on the source: no service imports another (each runs as a process of its
own, and scales, deploys and fails on its own; what two share lives in services/common or schemas)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "services.ingress", "services.decide", "services.dispatch", "services.inbound", "services.mailsync",
    "services.scheduler", "services.webhooks", "services.sink", "projections",
}  # fmt: skip


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def owner(module: str) -> str | None:
    return next((s for s in SERVICES if module == s or module.startswith(s + ".")), None)


def test_no_service_imports_another() -> None:
    crossings = []
    for service in sorted(SERVICES):
        for path in sorted((ROOT / service.replace(".", "/")).rglob("*.py")):
            for module in imports(path):
                if owner(module) not in (None, service):
                    crossings.append(f"{path.relative_to(ROOT)} imports {module}")
    assert crossings == []
