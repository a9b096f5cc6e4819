"""A real IMAP server for the tests and benchmarks: Dovecot from Debian's packages, started with a
throwaway configuration (its own directory, port and users), plaintext on loopback.

`python -m tests.dovecot` installs it where it can (root with apt-get), as `make test` asks; otherwise
it says what is missing, and the tests that need it are skipped with the same words.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aioimaplib

from devstack.infra import free_port, wait_for_port
from tests.debian import apt_install

PACKAGE = "dovecot-imapd"
MISSING = (
    f"Dovecot is not installed (the IMAP sync tests need it): install Debian's {PACKAGE} "
    f"(`apt-get install {PACKAGE}`), or run `make test` as root on a Debian machine"
)


def binary() -> str | None:
    return shutil.which("dovecot") or next((p for p in ("/usr/sbin/dovecot",) if os.path.exists(p)), None)


def ensure_installed() -> bool:
    """Dovecot is here, or was installed now (root and apt-get); False (with the reason printed) if not."""
    if binary():
        return True
    if not apt_install(PACKAGE, MISSING):
        return False
    return bool(binary())


CONFIG = """\
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
first_valid_uid = 0
default_internal_user = {user}
default_login_user = {user}
mail_location = maildir:{root}/mail/%u
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""


class Dovecot:
    """One Dovecot server in a directory of its own; users are added while it runs."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sendstream-dovecot-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.host = "127.0.0.1"
        # Mail is kept as an unprivileged user: Dovecot refuses to access it as root.
        self.user = "dovecot" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.config = self.root / "dovecot.conf"

    def start(self) -> Dovecot:
        dovecot = binary()
        if not dovecot:
            raise RuntimeError(MISSING)
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir()
        (self.root / "users").write_text("")
        if os.geteuid() == 0:
            shutil.chown(self.root / "mail", self.user, self.user)
        group = self.user if os.geteuid() == 0 else str(os.getegid())
        self.config.write_text(CONFIG.format(root=self.root, user=self.user, group=group, port=self.port))
        # Dovecot forks into the background: its output would hold a pipe open, so it goes to its log.
        started = subprocess.run(
            [dovecot, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if started.returncode != 0:
            log = self.root / "dovecot.log"
            raise RuntimeError(f"Dovecot did not start: {log.read_text() if log.exists() else started}")
        wait_for_port(self.host, self.port, 20)
        return self

    def stop(self) -> None:
        subprocess.run(["doveadm", "-c", str(self.config), "stop"], capture_output=True)
        deadline = time.monotonic() + 10
        while (self.root / "run" / "master.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def add_user(self, username: str, password: str) -> None:
        with (self.root / "users").open("a") as f:
            f.write(f"{username}:{{PLAIN}}{password}\n")

    def settings(self, username: str, password: str) -> dict:
        """The identities dialect's `imap` settings of a user of this server."""
        return {
            "host": self.host,
            "port": self.port,
            "tls": "none",
            "username": username,
            "password": password,
        }

    async def client(self, username: str, password: str) -> aioimaplib.IMAP4:
        imap = aioimaplib.IMAP4(self.host, self.port, timeout=30)
        await imap.wait_hello_from_server()
        answer = await imap.login(username, password)
        assert answer.result == "OK", answer
        return imap

    async def append(
        self, username: str, password: str, messages: list[bytes], folder: str = "INBOX"
    ) -> None:
        """Deliver `messages` into a user's folder, as the provider's MTA would."""
        imap = await self.client(username, password)
        try:
            for raw in messages:
                answer = await imap.append(raw, mailbox=folder)
                assert answer.result == "OK", answer
        finally:
            await imap.logout()


if __name__ == "__main__":
    ensure_installed()  # a missing Dovecot skips the tests that need it (saying why); it fails nothing
