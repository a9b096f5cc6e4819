"""The layout's rules, checked on the source: no service imports another (each runs as a process of its
own, and scales, deploys and fails on its own; what two share lives in services/common or schemas)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "services.ingress", "services.decide", "services.dispatch", "services.inbound", "services.mailsync",
    "services.scheduler", "services.webhooks", "devstack.sink", "projections",
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


# What no module of the pure mail package may import: every way to I/O we use, and every service.
IMPURE = ("asyncio", "socket", "asyncpg", "aiohttp", "aiokafka", "faststream", "aiosmtplib", "aiosmtpd", "dns",
          "services", "projections")  # fmt: skip


def test_the_mail_package_does_no_io_and_uses_no_service() -> None:
    found = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "mail").rglob("*.py"))
        for module in imports(path)
        if module.split(".")[0] in IMPURE
    }
    assert found == set()


def test_no_service_imports_another() -> None:
    crossings = []
    for service in sorted(SERVICES):
        for path in sorted((ROOT / service.replace(".", "/")).rglob("*.py")):
            for module in imports(path):
                if owner(module) not in (None, service):
                    crossings.append(f"{path.relative_to(ROOT)} imports {module}")
    assert crossings == []


def test_the_readme_layout_names_every_package_and_nothing_gone() -> None:
    """Each top-level directory and each package under services/ has its line in the README's Layout,
    and every line names one that exists."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    top, under = set(), set()
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 10):
            continue  # a continuation of the line before
        name = line.split()[0]
        (under if line.startswith("  ") else top).add(name)
    on_disk_top = {
        p.name + "/"
        for p in ROOT.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name not in ("build",)
        and not p.name.endswith(".egg-info")
    }
    on_disk_services = {p.name + "/" for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}
    assert top == on_disk_top
    assert {n for n in under if n.endswith("/")} == on_disk_services
    assert all((ROOT / "services" / n).exists() for n in under)


# --- dialects -------------------------------------------------------------------------------------------

REGISTRY = {"schemas/dialect.py", "schemas/dialects.py"}
SOURCE = ("services", "schemas", "projections", "mail", "devstack")


def own_modules(name: str) -> set[str]:
    return {f"schemas/api/{name}.py", f"services/ingress/routes/{name}.py"}


def named_outside(names: set[str], path: Path) -> list[str]:
    """Where a module names a dialect: a string that is a dialect's name, except a key into a row
    (`row["mailboxes"]`: a column) and a table's name in the list of tables (services/tenants.py)."""
    tree = ast.parse(path.read_text(), str(path))
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            allowed.add(id(node.slice))
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2 and path.name == "tenants.py":
            allowed.add(id(node.elts[0]))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} names {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in allowed
    ]


def test_a_dialect_is_named_only_in_its_own_modules_and_the_registry() -> None:
    """Adding a dialect is one schema module, one routes module and one line in schemas/dialects.py:
    nothing else may name one (what the rest needs to know of a dialect, schemas/dialect.py asks)."""
    from schemas.dialects import REGISTERED  # noqa: PLC0415 - the test of the layout imports it alone

    names = set(REGISTERED)
    assert names >= {"identities", "inboxes", "mailboxes"}
    found = []
    for path in sorted(p for top in SOURCE for p in (ROOT / top).rglob("*.py")):
        where = str(path.relative_to(ROOT))
        found += [
            place
            for place in named_outside(names, path)
            if where not in REGISTRY and not any(where in own_modules(n) and repr(n) in place for n in names)
        ]
    assert not found, "a dialect named outside its own modules and the registry:\n" + "\n".join(found)


def test_every_registered_dialect_has_its_schema_and_routes_modules_and_its_routes_are_served() -> None:
    import services.ingress.app  # noqa: F401, PLC0415 - loads the routes of every registered dialect
    from schemas.dialects import REGISTERED  # noqa: PLC0415
    from services.ingress.http import ROUTES  # noqa: PLC0415

    tags = {r.tag for r in ROUTES}
    for name, dialect in REGISTERED.items():
        assert all((ROOT / m).exists() for m in own_modules(name)), name
        assert dialect.name == name
        assert name in tags, f"no route of the {name} dialect is served"
