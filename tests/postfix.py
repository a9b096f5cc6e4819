"""A real MTA for the tests: Postfix from Debian's packages, run as a private instance (its own
configuration, queue and data directories under a temporary directory, its own port on 127.0.0.1).

`python -m tests.postfix` installs it where it can (root with apt-get), as `make test` asks; otherwise
it says what is missing, and the tests that need it are skipped with the same words. The package is
installed without a configuration ("No configuration") and with invoke-rc.d told not to start
anything, so the system's own Postfix never runs and port 25 is never bound: only the instances the
tests start, each with `postfix -c DIR start`, run.

An instance has two SMTP servers: the relay a mailbox sends through, and the server of one test
domain (a second smtpd of the same instance), which refuses every recipient with 550 5.1.1. The relay
accepts mail for that domain, is refused by its server after the fact, and so bounces it: the report
is Postfix's own DSN, to the envelope sender. Everything else (that bounce among it) goes to the
inbound SMTP server under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack.infra import free_port, wait_for_port
from tests.debian import apt_install

PACKAGE = "postfix"
MISSING = (
    f"Postfix is not installed (the delivery report test needs it): install Debian's {PACKAGE} "
    f"(`apt-get install {PACKAGE}`), or run `make test` as root on a Debian machine"
)
NOT_ROOT = "a private Postfix instance runs as root (it drops to the postfix user itself): run as root"
# Keeps invoke-rc.d from starting the system's Postfix while the package is installed.
POLICY = Path("/usr/sbin/policy-rc.d")


def binary() -> str | None:
    return shutil.which("postfix") or next((p for p in ("/usr/sbin/postfix",) if os.path.exists(p)), None)


def usable() -> str | None:
    """Why a private instance cannot run here, or None if it can."""
    if not binary():
        return MISSING
    if os.geteuid() != 0:
        return NOT_ROOT
    return None


def ensure_installed() -> bool:
    """Postfix is here, or was installed now (root and apt-get); False (with the reason printed) if not."""
    if binary():
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"warning: {MISSING}", file=sys.stderr)
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # No system configuration: nothing listens, no main.cf for the system instance.
    subprocess.run(
        ["debconf-set-selections"], input="postfix postfix/main_mailer_type select No configuration\n",
        text=True, env=env, capture_output=True,
    )  # fmt: skip
    placed = not POLICY.exists()
    if placed:
        POLICY.write_text(
            "#!/bin/sh\n# sendstream tests: no service starts while packages install\nexit 101\n"
        )
        POLICY.chmod(0o755)
    try:
        if not apt_install(PACKAGE, MISSING, env):
            return False
    finally:
        if placed:
            POLICY.unlink(missing_ok=True)
    return bool(binary())


MAIN = """\
compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains = {failing}
transport_maps = texthash:{root}/etc/transport
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
biff = no
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
smtp_host_lookup = native
disable_dns_lookups = yes
smtp_dns_support_level = disabled
delay_warning_time = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
bounce_queue_lifetime = 0
shlib_directory = /usr/lib/postfix
# The recipient domain's own server (the second smtpd of master.cf): it knows none of its users.
mx_recipient_restrictions = check_recipient_access texthash:{root}/etc/unknown_users
"""

MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{mx_port} inet n - n - - smtpd -o smtpd_recipient_restrictions=$mx_recipient_restrictions
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """One Postfix instance in a directory of its own. Mail to `failing_domain` is relayed to that
    domain's server (port `mx_port`), which refuses every recipient (550 5.1.1 no such user): Postfix
    then sends its own DSN to the envelope sender. Mail to `delivered_domain` is taken (and
    discarded: delivered). Everything else goes to `[127.0.0.1]:inbound_port`."""

    def __init__(self, failing_domain: str, inbound_port: int, delivered_domain: str | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="sendstream-postfix-"))
        self.root.chmod(0o755)
        self.port, self.mx_port = free_port(), free_port()
        self.host = "127.0.0.1"
        self.failing_domain, self.inbound_port = failing_domain, inbound_port
        self.delivered_domain = delivered_domain
        self.config = self.root / "etc"

    def start(self) -> Postfix:
        postfix = binary()
        if reason := usable():
            raise RuntimeError(reason)
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "data", "postfix", "postfix")
        (self.config / "main.cf").write_text(MAIN.format(root=self.root, failing=self.failing_domain))
        (self.config / "master.cf").write_text(MASTER.format(port=self.port, mx_port=self.mx_port))
        delivered = f"{self.delivered_domain} discard:delivered\n" if self.delivered_domain else ""
        (self.config / "transport").write_text(
            f"{self.failing_domain} smtp:[127.0.0.1]:{self.mx_port}\n{delivered}"
            f"* smtp:[127.0.0.1]:{self.inbound_port}\n"
        )
        (self.config / "unknown_users").write_text(f"{self.failing_domain} 550 5.1.1 no such user here\n")
        for step in (["check"], ["start"]):
            done = subprocess.run([postfix, "-c", str(self.config), *step], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"postfix {step[0]} failed: {done.stderr.strip()}\n{self.log()}")
        wait_for_port(self.host, self.port, 20)
        return self

    def log(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def smtp_settings(self) -> dict:
        return {"host": self.host, "port": self.port, "tls": "none"}

    def stop(self) -> None:
        postfix = binary()
        if postfix:
            subprocess.run([postfix, "-c", str(self.config), "stop"], capture_output=True)
        deadline = time.monotonic() + 10
        while (self.root / "queue" / "pid" / "master.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    ensure_installed()  # a missing Postfix skips the test that needs it (saying why); it fails nothing
