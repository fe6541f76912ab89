"""A shared MLflow tracking server on one machine: PostgreSQL for runs and the registry, an
S3-compatible store for artifacts, ``mlflow server`` in front of both.

Why: an SQLite file takes one writer at a time and lives on one disk; a team, or a sweep whose jobs
run in parallel, needs one server that every client reaches over HTTP. Artifacts go through that
server (``--serve-artifacts``), so a client sets only ``MLFLOW_TRACKING_URI`` and needs no database
driver and no S3 credentials.

This starts the three for development, tests and a team's own machine, all on 127.0.0.1:

- a throwaway PostgreSQL cluster from the OS packages (``initdb -A trust``, ``pg_ctl``, ``createdb``),
  run as an unprivileged user when started as root (PostgreSQL refuses to run as root);
- ``moto_server``, which speaks the S3 API (objects live in its memory), with the bucket created;
- ``mlflow server --backend-store-uri postgresql+psycopg2://... --artifacts-destination s3://BUCKET/
  mlartifacts --serve-artifacts``, with the S3 endpoint and dummy credentials in its environment only.

Everything stops on SIGINT/SIGTERM/SIGHUP or when the ``TeamServer`` is closed (it is a context manager),
and what was stored goes with it. For a lasting server run the same ``mlflow server`` command against
a managed PostgreSQL and a real bucket (README, "A shared tracking server").

    python -m movinet.tracking.team_server [--folder .mlflow-server] [--port 5000] [--s3-port 9000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"  # every service listens here only: nothing is exposed beyond this machine
S3_CREDENTIALS = {  # moto accepts any key pair; only the mlflow server (and tests) ever see these
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
STOP_TIMEOUT_S = 20.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closed


class ServiceError(RuntimeError):
    """A service did not start or stop: the message carries the command's output or its log."""


def free_port() -> int:
    """A port nothing listens on now (port 0 in the flags: tests run side by side without clashing)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port(port: int) -> int:
    return port or free_port()


def _tail(path: Path, chars: int = 3000) -> str:
    """The end of a service's log, for an error message that says why it did not come up."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_until(ready: Callable[[], bool], what: str, timeout: float, log: Path | None = None, alive=None) -> None:
    """Poll ``ready`` until it holds: a service is usable only once it answers, not once it was
    spawned. Fails early, with the end of its log, if the process died (``alive`` says so)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except Exception:  # not answering yet: connection refused, 503, ...
            pass
        if alive is not None and not alive():
            raise ServiceError(f"{what} exited before it was ready:\n{_tail(log) if log else ''}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log) if log else ''}")
        time.sleep(0.3)


def _parent_death_signal() -> Callable[[], None] | None:
    """For Popen's ``preexec_fn``: asks Linux to send the child SIGTERM when the thread that started
    it dies without closing it (SIGKILL, a crash), so a dead session leaves no server holding its
    port. Start services from a thread that lives as long as they do (the main thread). libc is
    loaded here, before the fork: a forked child of a threaded process must not import anything."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Service:
    """One child process in a session of its own: Ctrl-C in the terminal reaches only this process,
    which then stops the services in order, and stopping one takes its whole process group (the
    mlflow CLI starts uvicorn workers)."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.cmd, self.log, self.env, self.cwd = name, cmd, log, env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after ``STOP_TIMEOUT_S``; the group's stragglers too."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker that outlived its parent
        self.proc = None


class _Managed:
    """start() returns self and undoes a half-done start; close() is idempotent; ``with`` does both."""

    def start(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


PG_TOOLS = ("initdb", "pg_ctl", "pg_isready", "createdb")


def postgres_bin(given: str | Path | None = None) -> Path:
    """The folder of ``initdb``, ``pg_ctl``, ``pg_isready`` and ``createdb``: given, the one
    ``initdb`` on PATH links into, or the newest /usr/lib/postgresql/*/bin (Debian keeps them off PATH)."""
    if given:
        candidates = [Path(given)]
    else:
        on_path = [Path(found).resolve().parent] if (found := shutil.which("initdb")) else []
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name.zfill(4))
        candidates = on_path + versions[::-1]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in PG_TOOLS):
            return folder
    raise FileNotFoundError(
        f"no PostgreSQL binaries ({', '.join(PG_TOOLS)}) in {', '.join(map(str, candidates)) or 'PATH'}: "
        "apt-get install postgresql, or give --pg-bin"
    )


def _as_user(user: str | None, cmd: list) -> list[str]:
    return [str(c) for c in (["runuser", "-u", user, "--", *cmd] if user else cmd)]


def _reachable(user: str, folder: Path) -> bool:
    """Whether ``user`` can search ``folder`` and every folder above it (root's home is 0700)."""
    done = subprocess.run(_as_user(user, ["test", "-x", folder]), cwd="/", capture_output=True)
    return done.returncode == 0


class PostgresCluster(_Managed):
    """A throwaway PostgreSQL cluster: made afresh by ``start`` (the S3 objects of a previous session
    are gone with moto, so its runs would point at nothing), its data removed by ``close``."""

    def __init__(self, folder, port=0, database="mlflow", user="mlflow", service_user="postgres", bin_dir=None):
        self.folder, self.port = Path(folder).resolve(), _port(port)
        self.database, self.user = database, user
        self.run_as = service_user if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
        self.bin, self.cluster, self.temporary = postgres_bin(bin_dir), None, False

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI, driver named: a bare ``postgresql://`` picks whichever driver
        SQLAlchemy prefers (psycopg 3 with the versions here), which may not be installed."""
        return f"postgresql+psycopg2://{self.user}@{HOST}:{self.port}/{self.database}"

    @property
    def data(self) -> Path:
        return self.cluster / "data"

    def _pg(self, *cmd, check: bool = True) -> subprocess.CompletedProcess:
        """A PostgreSQL tool, as the service user when root; cwd in the cluster (the user may not
        be able to enter the caller's working directory)."""
        full = _as_user(self.run_as, [self.bin / cmd[0], *cmd[1:]])
        done = subprocess.run(full, cwd=self.cluster or "/", capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise ServiceError(
                f"{' '.join(full)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return done

    def _start(self) -> None:
        self.cluster = self._cluster_dir()
        self._pg("initdb", "-D", self.data, "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-locale", "--no-sync")
        options = f"-p {self.port} -k {self.cluster} -c listen_addresses={HOST}"
        log = self.cluster / "postgres.log"
        self._pg("pg_ctl", "-D", self.data, "-l", log, "-o", options, "-w", "-t", "60", "start")
        pg_isready = ("pg_isready", "-h", HOST, "-p", self.port, "-U", self.user)
        wait_until(lambda: self._pg(*pg_isready, check=False).returncode == 0, "PostgreSQL", 60, log)
        self._pg("createdb", "-h", HOST, "-p", self.port, "-U", self.user, self.database)

    def _cluster_dir(self) -> Path:
        """``folder/postgres``, emptied; a private temporary folder instead when the service user
        cannot reach ``folder`` or its socket path would pass the 107-byte limit of Unix sockets."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / "postgres"
        if len(str(target)) > 80 or (self.run_as and not _reachable(self.run_as, self.folder)):
            target, self.temporary = Path(tempfile.mkdtemp(prefix="movinet-pg-")), True
        else:
            if (target / "data" / "postmaster.pid").exists():  # a session killed before it could stop it
                self.cluster = target
                self._stop("immediate")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(target, entry.pw_uid, entry.pw_gid)
        return target

    def alive(self) -> bool:
        """Whether the postmaster named in ``postmaster.pid`` still runs (pg_ctl detached it)."""
        try:
            os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), 0)
        except (OSError, ValueError, IndexError, TypeError):
            return False
        return True

    def _stop(self, mode: str) -> subprocess.CompletedProcess:
        return self._pg("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop", check=False)

    def close(self) -> None:
        """Stop the cluster (fast shutdown: open connections are cut) and delete its data."""
        if self.cluster is None:
            return
        if (self.data / "postmaster.pid").exists() and self._stop("fast").returncode:
            self._stop("immediate")  # a shutdown that is stuck is cut short
        shutil.rmtree(self.cluster if self.temporary else self.data, ignore_errors=True)
        self.cluster = None


class S3Server(_Managed):
    """``moto_server``: the S3 HTTP API, objects in memory, for artifacts and DVC remotes in tests
    and development. Any key pair is accepted; ``S3_CREDENTIALS`` are the ones used here."""

    def __init__(self, folder, port: int = 0, bucket: str = "mlflow"):
        self.folder, self.port, self.bucket = Path(folder).resolve(), _port(port), bucket
        self.service: Service | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self):
        """A boto3 S3 client for this server (to create the bucket, and for tests to list it)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        self.service = Service("moto_server", cmd, self.folder / "moto.log")
        self.service.start()
        client = self.client()
        wait_until(lambda: client.list_buckets() is not None, "moto_server", 60, self.service.log, self.service.alive)
        client.create_bucket(Bucket=self.bucket)

    def close(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


class TrackingServer(_Managed):
    """``mlflow server`` over a database, proxying artifacts to ``artifacts_destination``. ``env``
    (the S3 endpoint and credentials) goes to the server's environment only: clients never need it."""

    def __init__(self, folder, backend_uri: str, artifacts_destination: str, port: int = 0, env=None, workers=1):
        self.folder, self.port = Path(folder).resolve(), _port(port)
        self.backend_uri, self.artifacts_destination = backend_uri, artifacts_destination
        self.env, self.workers = dict(env or {}), workers
        self.service: Service | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", self.backend_uri),
            *("--artifacts-destination", self.artifacts_destination, "--serve-artifacts"),
            *("--host", HOST, "--port", str(self.port), "--workers", str(self.workers)),
        ]

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
        # MLflow's job runner (GenAI scorer jobs, which nothing here submits) would start seven more
        # worker processes, each an SQLite queue; set the variable to true to have them anyway
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        # cwd: the folder, so nothing the server might write lands in the caller's project
        self.service = Service(
            "mlflow server", self.command(), self.folder / "mlflow.log", {**env, **self.env}, self.folder
        )
        self.service.start()

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return reply.status == 200 and reply.read().strip() == b"OK"

        # a fresh database: the first start migrates the schema (tens of seconds on a slow machine)
        wait_until(healthy, "mlflow server", 180, self.service.log, self.service.alive)

    def close(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


@contextlib.contextmanager
def _uninterrupted():
    """Ignore the stop signals while stopping: a second Ctrl-C must not abandon half the services."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class TeamServer(_Managed):
    """PostgreSQL, moto's S3 and ``mlflow server`` started in that order and stopped in reverse.
    Port 0 means any free port (tests); ``tracking_uri`` is all a client needs."""

    def __init__(
        self, folder, port=5000, s3_port=9000, pg_port=5433, bucket="mlflow", service_user="postgres", pg_bin=None
    ):
        self.folder = Path(folder).resolve()
        self.postgres = PostgresCluster(self.folder, pg_port, service_user=service_user, bin_dir=pg_bin)
        self.s3 = S3Server(self.folder, s3_port, bucket)
        env = {"MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint, **S3_CREDENTIALS}
        self.mlflow = TrackingServer(self.folder, self.postgres.uri, f"s3://{bucket}/mlartifacts", port, env)
        self._stack = contextlib.ExitStack()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.uri

    def _start(self) -> None:
        for part in (self.postgres, self.s3, self.mlflow):
            self._stack.callback(part.close)  # before start: a half-started part is closed too
            part.start()

    def failed(self) -> str | None:
        """Which service died on its own, with the end of its log; None while all three run."""
        logs = {
            "PostgreSQL": (self.postgres.alive(), self.postgres.cluster and self.postgres.cluster / "postgres.log"),
            "moto_server": (self.s3.service is not None and self.s3.service.alive(), self.folder / "moto.log"),
            "mlflow server": (
                self.mlflow.service is not None and self.mlflow.service.alive(),
                self.folder / "mlflow.log",
            ),
        }
        for name, (alive, log) in logs.items():
            if not alive:
                return f"{name} exited; the end of {log}:\n{_tail(log) if log else ''}"
        return None

    def close(self) -> None:
        with _uninterrupted():
            self._stack.close()

    def describe(self) -> str:
        return "\n".join(
            [
                f"MLflow tracking server: {self.tracking_uri}",
                f"  clients set:     MLFLOW_TRACKING_URI={self.tracking_uri}",
                f"  backend store:   {self.postgres.uri}",
                f"  artifacts:       {self.mlflow.artifacts_destination} on {self.s3.endpoint} (moto, in memory)",
                f"  logs:            {self.folder}",
                "Everything stored is thrown away when this stops (Ctrl-C).",
            ]
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m movinet.tracking.team_server",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
    parser.add_argument(
        "--folder", type=Path, default=None, help="logs and the cluster (default: <project>/.mlflow-server)"
    )
    parser.add_argument(
        "--port", type=int, default=5000, help="the MLflow server's port (%(default)s; 0: any free port)"
    )
    parser.add_argument("--s3-port", type=int, default=9000, help="moto's S3 port (%(default)s; 0: any free port)")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (%(default)s; 0: any free port)")
    parser.add_argument(
        "--bucket", default="mlflow", help="the artifact bucket (%(default)s): artifacts under s3://BUCKET/mlartifacts"
    )
    parser.add_argument("--service-user", default="postgres", help="runs PostgreSQL when started as root (%(default)s)")
    parser.add_argument(
        "--pg-bin", default=None, help="folder of initdb/pg_ctl (default: PATH, /usr/lib/postgresql/*/bin)"
    )
    return parser


def _default_folder() -> Path:
    from movinet.config import project_root

    try:
        return project_root() / ".mlflow-server"
    except FileNotFoundError:
        return Path.cwd() / ".mlflow-server"


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM/SIGHUP stop like Ctrl-C: through the with block, which stops the services


def _serve(server: TeamServer) -> int:
    """Wait for Ctrl-C/SIGTERM; exit 1 if a service dies on its own (its log says why)."""
    while True:
        failure = server.failed()
        if failure:
            print(f"error: {failure}", file=sys.stderr)
            return 1
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for sig in STOP_SIGNALS[1:]:
        signal.signal(sig, _raise_interrupt)
    folder = args.folder or _default_folder()
    try:
        with TeamServer(
            folder, args.port, args.s3_port, args.pg_port, args.bucket, args.service_user, args.pg_bin
        ) as server:
            print(server.describe(), flush=True)
            return _serve(server)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except (ServiceError, OSError, ValueError, KeyError) as exc:  # KeyError: no such service user
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
