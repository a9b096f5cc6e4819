"""The package as an operator gets it: a wheel built from the repository, installed with its
dependencies into a clean virtual environment, finds and applies its migrations on an empty database."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from devstack.infra import Infra

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
IGNORED = (
    ".git",
    ".venv",
    ".data",
    "build",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".schemathesis",
    ".hypothesis",
)

MIGRATE = """
import asyncio, sys
import asyncpg
import services.common.db as db

async def main():
    pool = await asyncpg.create_pool(sys.argv[1], min_size=1, max_size=1)
    print(db.__file__)
    print(",".join(await db.migrate(pool)))
    await pool.close()

asyncio.run(main())
"""


def test_a_wheel_installs_in_a_clean_venv_and_applies_its_migrations(infra: Infra, tmp_path: Path) -> None:
    # From a copy: setuptools' build/ directory in a working tree can hold files since removed.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path, source],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("sendstream-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=60)
    subprocess.run(
        [venv / "bin/pip", "install", "--quiet", "--disable-pip-version-check", wheel],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip

    url = infra.env["DATABASE_URL"]
    name = f"wheel_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(url, f"CREATE DATABASE {name}"))
    try:
        ran = subprocess.run(
            [venv / "bin/python", "-c", MIGRATE, url.rsplit("/", 1)[0] + f"/{name}"],
            cwd=tmp_path,  # not the repository: only what the wheel installed can be imported
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        asyncio.run(admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    lines = ran.stdout.splitlines()  # the module's path, the service's log, what was applied
    module, applied = lines[0], lines[-1]
    assert Path(module).is_relative_to(venv)
    migrations = sorted(p.name for p in (ROOT / "services/common/sql").glob("*.sql"))
    assert len(migrations) > 20
    assert applied.split(",") == migrations


async def admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
