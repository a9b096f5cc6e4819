"""A real browser for the dashboard's tests: Debian's Chromium, driven by Playwright (never a browser
Playwright downloads: this machine's network reaches package registries only).

`python -m tests.chromium` installs it where it can (root with apt-get), as `make test` asks; otherwise
it says what is missing, and the dashboard's browser tests are skipped with the same words.
"""

from __future__ import annotations

import shutil

from tests.debian import apt_install

PACKAGE = "chromium"
MISSING = (
    f"Chromium is not installed (the dashboard's browser tests need it): install Debian's {PACKAGE} "
    f"(`apt-get install {PACKAGE}`), or run `make test` as root on a Debian machine"
)
# Headless, and quiet: no first-run, sync, component or background connections (this machine refuses
# them, many at a time); no sandbox of its own, as the tests run as root.
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_installed() -> bool:
    """Chromium is here, or was installed now (root and apt-get); False (with the reason printed) if not."""
    return bool(binary()) or (apt_install(PACKAGE, MISSING) and bool(binary()))


if __name__ == "__main__":
    ensure_installed()  # a missing Chromium skips the browser tests (saying why); it fails nothing
