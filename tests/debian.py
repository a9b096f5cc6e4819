"""Installing a Debian package a test needs (a real Dovecot, a real Postfix), where this machine allows it:
as root with apt-get. Otherwise the caller says what is missing, and the tests that need it are skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def apt_install(package: str, missing: str, env: dict[str, str] | None = None) -> bool:
    """Install `package` with apt-get (the package lists refreshed if they are stale); False, with
    `missing` and apt-get's words printed, if it cannot be."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"warning: {missing}", file=sys.stderr)
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:  # stale package lists
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"warning: {missing}\napt-get said: {done.stderr.strip()[-2000:]}", file=sys.stderr)
            return False
    return True
