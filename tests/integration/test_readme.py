"""The README stays true: its walk-through runs as written against `make run`'s launcher, its table is current."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devstack.local import wait_ready
from services.common.settings import (
    DecideSettings,
    DispatchSettings,
    IngressSettings,
    LocalSettings,
    SchedulerSettings,
    env_example,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

pytestmark = pytest.mark.integration


def test_configuration_table_and_env_example_are_current() -> None:
    """The README's table and deploy/env.example are exactly what the settings models generate."""
    assert markdown_table() in README
    assert (ROOT / "deploy" / "env.example").read_text() == env_example()


def test_env_example_values_load_as_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value deploy/env.example sets, copied into the environment as it is, is read back by the
    settings as that setting's default (so a copied env.example runs exactly like no configuration)."""
    lines = (ROOT / "deploy" / "env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert len(values) > 30
    for name in list(os.environ):  # only env.example speaks (make exports SENDSTREAM_BOOTSTRAP_API_KEY)
        if name.startswith("SENDSTREAM_") or name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for cls in (IngressSettings, DecideSettings, DispatchSettings, SchedulerSettings, LocalSettings):
        loaded = cls()
        for name, field in cls.model_fields.items():
            expected = field.get_default(call_default_factory=True)
            assert getattr(loaded, name) == expected, (cls.__name__, name, getattr(loaded, name), expected)


def test_make_run_is_ready_within_60s_and_the_walkthrough_works_as_written(tmp_path: Path) -> None:
    """`python -m devstack.local` (what `make run` runs) starts from nothing; the README's commands (the
    walk-through, then examples/inkbox_sdk.py and examples/agentmail_sdk.py) then work."""
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```", README, re.S).group(1)
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    env.update(
        SENDSTREAM_BOOTSTRAP_API_KEY="sk_live_localdev",
        SENDSTREAM_DATA_DIR=str(tmp_path / ".data"),
        PYTHONPATH=str(ROOT),
    )
    tmp_path.chmod(0o755)
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    run = subprocess.Popen(
        [sys.executable, "-m", "devstack.local"], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    try:
        wait_ready("http://127.0.0.1:8080/readyz", 60)
        ready_after = time.monotonic() - started
        assert ready_after < 60
        walk = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert walk.returncode == 0, walk.stderr
        out = walk.stdout
        assert '"handle":"alice@agents.example.test"' in out
        assert '"status":"accepted"' in out and '"affinity":"new"' in out
        assert '"status":"sent"' in out, out
        assert "multipart/alternative" in out and "From: alice.chen@tryacme.test" in out
        assert '"secret":"whsec_' in out
        assert '"webhook-signature": "v1,' in out and '\\"type\\":\\"message.sent\\"' in out, out
        replies = out.split("HTTP/1.1 ")[1:]
        assert [r.split()[0] for r in replies] == ["202", "202"]
        assert "Idempotent-Replayed: true" not in replies[0] and "Idempotent-Replayed: true" in replies[1]
        assert replies[0].split("\n\n", 1)[1] == replies[1].split("\n\n", 1)[1]  # text mode: CRLF read as \n
        assert '"affinity":"existing"' in replies[0]

        # The mailboxes dialect's vendor SDK, as the README tells a user to run it against `make run`.
        sdk = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "inkbox_sdk.py")],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sdk.returncode == 0 and "download and delete all work" in sdk.stdout, sdk.stderr[-3000:]
        # And AgentMail's SDK, as docs/agentmail.md tells a user to run it.
        sdk = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "agentmail_sdk.py")],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sdk.returncode == 0 and "all work" in sdk.stdout, sdk.stderr[-3000:]

        # Ctrl-C and `make run` again at once: the new one waits for the old one's PostgreSQL and broker
        # to let go instead of failing, and finds the data the first one wrote.
        run.send_signal(signal.SIGINT)
        again = subprocess.Popen(
            [sys.executable, "-m", "devstack.local"], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        assert run.wait(30) == 0, (tmp_path / "run.log").read_text()[-3000:]
        run = again
        wait_ready("http://127.0.0.1:8080/readyz", 60)
        conv = re.search(r'"convId":"(conv_[0-9a-f]+)"', out).group(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:8080/v1/conversations/{conv}",
            headers={"Authorization": "Bearer sk_live_localdev"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200 and '"status":"sent"' in r.read().decode()
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(30)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    with pytest.raises(OSError):
        urllib.request.urlopen("http://127.0.0.1:8080/healthz", timeout=1)
