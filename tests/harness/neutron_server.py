"""A real Neutron 29 server on this machine: API (uWSGI), RPC server and periodic workers.

Used by the e2e fixtures (``tests/e2e/conftest.py``), the benchmarks and ``neutron-harness up``.
Each ``NeutronServer`` gets its own MariaDB database and its own RabbitMQ vhost (so two pytest
sessions on one machine never steal each other's heartbeats), config files and logs in a temporary
state directory, and an API port picked free. ``stop()`` kills every process and drops the
database and the vhost. Recipes and pitfalls: the project's Neutron notes (``neutron.md``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

import requests
from tests.harness import services
from tests.harness.neutron_config import ML2_CONF, render_neutron_conf, render_uwsgi_ini
from tests.harness.neutron_venv import NeutronVenv, ensure_neutron_venv
from tests.kit.ports import free_port

_PROCESSES = ("rpc", "periodic", "api")
# stop_api() lets in-flight API calls finish; stop() need not be gentle (the database is dropped next),
# and oslo.service would take about 4 s to shut the RPC and periodic workers down gracefully.
_API_GRACE_S = 10.0
_STOP_GRACE_S = 2.0


class HarnessError(RuntimeError):
    """The harness could not start or drive Neutron; the message says why and where the logs are."""


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class NeutronServer:
    """Start with ``start()`` or ``with NeutronServer(...) as neutron:``; always ``stop()``.

    Start from the main thread: the processes are told to die with the thread that started them.
    """

    def __init__(
        self,
        *,
        agent_down_time: int = 10,
        report_interval: int = 2,
        allow_automatic_l3agent_failover: bool = False,
        allow_automatic_dhcp_failover: bool = False,
        notifications: bool = False,
        api_processes: int = 2,
        rabbit: services.Rabbit | None = None,
        mysql: services.MySQL | None = None,
        startup_timeout: float = 90.0,
        keep_state: bool = False,
        venv: NeutronVenv | None = None,
    ) -> None:
        self.agent_down_time = agent_down_time
        self.report_interval = report_interval
        self.allow_automatic_l3agent_failover = allow_automatic_l3agent_failover
        self.allow_automatic_dhcp_failover = allow_automatic_dhcp_failover
        # [oslo_messaging_notifications] driver = messagingv2; off (the default) is a stock neutron.conf.
        self.notifications = notifications
        self.api_processes = api_processes
        self.rabbit = rabbit or services.Rabbit()
        self.mysql = mysql or services.MySQL()
        self.startup_timeout = startup_timeout
        self.keep_state = keep_state
        self._venv = venv
        # pid + random: stale databases and vhosts of dead sessions are recognised by their pid.
        self.token = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.database = f"{services.NAME_PREFIX}_{self.token}"
        self.vhost = f"{services.NAME_PREFIX}_{self.token}"
        self.port = 0
        self.state_dir = Path()
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._created_db = False
        self._created_vhost = False

    # -- properties ---------------------------------------------------------------------------

    @property
    def venv(self) -> NeutronVenv:
        if self._venv is None:
            self._venv = ensure_neutron_venv()
        return self._venv

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def etc(self) -> Path:
        return self.state_dir / "etc"

    @property
    def conf_path(self) -> Path:
        return self.etc / "neutron.conf"

    @property
    def ml2_conf_path(self) -> Path:
        return self.etc / "plugins" / "ml2" / "ml2_conf.ini"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def transport_url(self) -> str:
        return self.rabbit.transport_url(self.vhost)

    @property
    def api_running(self) -> bool:
        proc = self._procs.get("api")
        return proc is not None and proc.poll() is None

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> NeutronServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> NeutronServer:
        began = time.monotonic()
        try:
            self._timed("venv", lambda: self.venv)
            self.rabbit.check()
            self.mysql.check()
            self.state_dir = Path(tempfile.mkdtemp(prefix="rpcd-neutron-"))
            self.log_dir.mkdir()
            (self.state_dir / "lock").mkdir()
            self._timed("cleanup", self._reap_stale)
            self._timed("vhost", self._create_vhost)
            self._timed("database", self._create_database)
            self.port = free_port()
            self._write_config()
            self._timed("migrate", self._migrate)
            launched = time.monotonic()
            for name in _PROCESSES:
                self._launch(name)
            self._wait_api(launched)
            self._wait_reports_consumer()
            self.timings["processes"] = time.monotonic() - launched
        except BaseException:
            self.keep_state = True  # the logs the error message points to
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Kill every process (SIGTERM, SIGKILL after a grace), drop the database and the vhost."""
        self._terminate(list(self._procs), grace=_STOP_GRACE_S)
        for handle in self._logs.values():
            handle.close()
        self._logs.clear()
        if self._created_db:
            self.mysql.drop_database(self.venv, self.database)
            self._created_db = False
        if self._created_vhost:
            self.rabbit.delete_vhost(self.vhost)
            self._created_vhost = False
        if not self.keep_state and self.state_dir != Path() and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def stop_api(self) -> None:
        """Stop only the API (uWSGI), for "Neutron API outage" tests; RPC and periodic keep running."""
        self._terminate(["api"], grace=_API_GRACE_S)

    def start_api(self) -> None:
        """Start the API again on the same port and wait until it answers."""
        if self.api_running:
            return
        launched = time.monotonic()
        self._launch("api")
        self._wait_api(launched)

    def rss_bytes(self) -> int:
        """Resident memory of all Neutron processes (every process in their process groups)."""
        groups = {proc.pid for proc in self._procs.values() if proc.poll() is None}
        return services.rss_of_groups(groups)

    # -- steps --------------------------------------------------------------------------------

    def _timed(self, name: str, step: Callable[[], object]) -> None:
        began = time.monotonic()
        step()
        self.timings[name] = time.monotonic() - began

    def _reap_stale(self) -> None:
        self.mysql.drop_stale_databases(self.venv)
        self.rabbit.delete_stale_vhosts()

    def _create_vhost(self) -> None:
        self.rabbit.create_vhost(self.vhost)
        self._created_vhost = True

    def _create_database(self) -> None:
        self.mysql.create_database(self.venv, self.database)
        self._created_db = True

    def _write_config(self) -> None:
        self.ml2_conf_path.parent.mkdir(parents=True)
        shutil.copy(self.venv.path / "etc" / "neutron" / "api-paste.ini", self.etc / "api-paste.ini")
        self.conf_path.write_text(
            render_neutron_conf(
                state_dir=self.state_dir,
                transport_url=self.transport_url,
                connection=self.mysql.sqlalchemy_url(self.database),
                agent_down_time=self.agent_down_time,
                report_interval=self.report_interval,
                l3_failover=self.allow_automatic_l3agent_failover,
                dhcp_failover=self.allow_automatic_dhcp_failover,
                notifications=self.notifications,
            )
        )
        self.ml2_conf_path.write_text(ML2_CONF)
        (self.etc / "uwsgi.ini").write_text(
            render_uwsgi_ini(
                port=self.port, venv=self.venv.path, etc=self.etc, processes=self.api_processes
            )
        )

    def _config_args(self) -> list[str]:
        return ["--config-file", str(self.conf_path), "--config-file", str(self.ml2_conf_path)]

    def _migrate(self) -> None:
        log = self.log_dir / "db-manage.log"
        cmd = [str(self.venv.script("neutron-db-manage")), *self._config_args(), "upgrade", "heads"]
        with log.open("wb") as out:
            result = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=services.clean_env(), timeout=300
            )
        if result.returncode != 0:
            raise HarnessError(
                f"neutron-db-manage upgrade heads failed (exit {result.returncode}); {log}:\n"
                + log_tail(log)
            )

    def _command(self, name: str) -> list[str]:
        if name == "api":
            return [str(self.venv.script("uwsgi")), "--ini", str(self.etc / "uwsgi.ini")]
        script = {"rpc": "neutron-rpc-server", "periodic": "neutron-periodic-workers"}[name]
        log_file = str(self.log_dir / f"{name}.log")
        return [str(self.venv.script(script)), *self._config_args(), "--log-file", log_file]

    def _launch(self, name: str) -> None:
        out = (self.log_dir / f"{name}.out").open("ab")
        self._logs[name] = out
        self._procs[name] = subprocess.Popen(
            self._command(name),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.state_dir,
            env=services.clean_env(),
            start_new_session=True,  # own process group: stop() signals the workers too
            preexec_fn=services.die_with_parent,
        )

    def _failure(self, what: str) -> HarnessError:
        parts = [f"{what} (state dir {self.state_dir})"]
        for name in _PROCESSES:
            for suffix in (".out", ".log"):
                path = self.log_dir / f"{name}{suffix}"
                if path.exists() and path.stat().st_size:
                    parts.append(f"--- {path.name} (last lines) ---\n{log_tail(path, 15)}")
        return HarnessError("\n".join(parts))

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise self._failure(f"neutron {name} process exited with {proc.returncode}")

    def _wait_api(self, launched: float) -> None:
        deadline = launched + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if requests.get(f"{self.url}/v2.0/agents", timeout=5).status_code == 200:
                    self.timings["api_ready"] = time.monotonic() - launched
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise self._failure(f"GET {self.url}/v2.0/agents did not answer 200 in {self.startup_timeout:.0f} s")

    def _wait_reports_consumer(self) -> None:
        """Heartbeats sent before the RPC server consumes ``q-reports-plugin`` would be lost."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.rabbit.queue_stats(self.vhost, "q-reports-plugin")[1] > 0:
                return
            time.sleep(0.3)
        raise self._failure("neutron-rpc-server never consumed q-reports-plugin")

    def _terminate(self, names: list[str], grace: float) -> None:
        procs = {name: self._procs.pop(name) for name in names if name in self._procs}
        for proc in procs.values():
            services.signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in procs.values():
            # Also catches forked workers that outlived their leader.
            services.signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        for name in procs:
            handle = self._logs.pop(name, None)
            if handle is not None:
                handle.close()
