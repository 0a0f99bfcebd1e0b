"""The machine's RabbitMQ and MariaDB as the harness uses them, plus process-group helpers.

Called by ``NeutronServer`` (a vhost and a database per server, dropped at stop, stale ones of dead
sessions reaped at start) and by ``Fleet`` (``die_with_parent``, ``rss_of_groups``). RabbitMQ is
administered with ``rabbitmqctl``; MariaDB through PyMySQL inside the Neutron venv, so the test
process needs no database driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.harness.neutron_venv import NeutronVenv
from tests.kit.process import clean_env as kit_clean_env

# Databases and vhosts are named NAME_PREFIX_<pid>_<random>; the pid tells whether a session lives.
NAME_PREFIX = "rpcd_neutron"
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


class ServiceUnavailable(RuntimeError):
    """RabbitMQ or MariaDB is not reachable or not administrable as the harness needs."""


def _reachable(host: str, port: int, what: str, hint: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as exc:
        raise ServiceUnavailable(f"{what} is not reachable at {host}:{port} ({exc}); {hint}") from exc


def _owner_is_dead(name: str) -> bool:
    """True for ``NAME_PREFIX_<pid>_<x>`` names whose pid no longer runs."""
    rest = name.removeprefix(f"{NAME_PREFIX}_")
    pid_text = rest.split("_", 1)[0]
    if rest == name or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Rabbit:
    host: str = "127.0.0.1"
    port: int = 5672
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    # A vhost per server isolates concurrent sessions; False shares "/" (needs no rabbitmqctl).
    isolate_vhost: bool = True

    def transport_url(self, vhost: str) -> str:
        path = quote(vhost, safe="") if self.isolate_vhost else ""
        return f"rabbit://{quote(self.user)}:{quote(self.password)}@{self.host}:{self.port}/{path}"

    def check(self) -> None:
        _reachable(self.host, self.port, "RabbitMQ", "start it with `rabbitmq-server -detached`")

    def _ctl(self, *args: str) -> str:
        try:
            result = subprocess.run(
                ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
            )
        except FileNotFoundError as exc:
            raise ServiceUnavailable("rabbitmqctl is not installed (needed for a vhost per server)") from exc
        if result.returncode != 0:
            raise ServiceUnavailable(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def create_vhost(self, vhost: str) -> None:
        if self.isolate_vhost:
            self._ctl("add_vhost", vhost)
            self._ctl("set_permissions", "-p", vhost, self.user, ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        if self.isolate_vhost:
            self._ctl("delete_vhost", vhost)

    def delete_stale_vhosts(self) -> None:
        if not self.isolate_vhost:
            return
        for vhost in self._ctl("list_vhosts", "--no-table-headers").split():
            if _owner_is_dead(vhost):
                self._ctl("delete_vhost", vhost)

    def queue_stats(self, vhost: str, queue: str) -> tuple[int, int]:
        """``(messages, consumers)`` of a queue; ``(0, 0)`` when it does not exist."""
        out = self._ctl("list_queues", "-p", vhost if self.isolate_vhost else "/", "name", "messages",
                        "consumers", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == queue:
                return int(parts[1]), int(parts[2])
        return 0, 0


# Runs inside the Neutron venv (which has PyMySQL): JSON request on stdin, JSON rows on stdout.
_SQL_PROGRAM = """
import json, sys
import pymysql
req = json.load(sys.stdin)
conn = pymysql.connect(host=req["host"], port=req["port"], user=req["user"],
                       password=req["password"], autocommit=True)
rows = []
with conn.cursor() as cur:
    for statement in req["statements"]:
        cur.execute(statement)
        rows.append([list(row) for row in cur.fetchall()])
conn.close()
json.dump(rows, sys.stdout)
"""


@dataclass(frozen=True)
class MySQL:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)

    def check(self) -> None:
        _reachable(self.host, self.port, "MariaDB", "start it with `/etc/init.d/mariadb start`")

    def sqlalchemy_url(self, database: str) -> str:
        auth = f"{quote(self.user)}:{quote(self.password)}"
        return f"mysql+pymysql://{auth}@{self.host}:{self.port}/{database}"

    def execute(self, venv: NeutronVenv, statements: list[str]) -> list[list[list[Any]]]:
        request = {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                   "statements": statements}
        result = subprocess.run(
            [str(venv.python), "-c", _SQL_PROGRAM], input=json.dumps(request), capture_output=True,
            text=True, timeout=120, env=clean_env(), check=False,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise ServiceUnavailable(f"MariaDB at {self.host}:{self.port} refused {statements[0]!r}: {last}")
        rows: list[list[list[Any]]] = json.loads(result.stdout)
        return rows

    def create_database(self, venv: NeutronVenv, database: str) -> None:
        self.execute(venv, [f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"])

    def drop_database(self, venv: NeutronVenv, database: str) -> None:
        self.execute(venv, [f"DROP DATABASE IF EXISTS `{database}`"])

    def drop_stale_databases(self, venv: NeutronVenv) -> None:
        (names,) = self.execute(venv, [f"SHOW DATABASES LIKE '{NAME_PREFIX}\\_%'"])
        stale = [row[0] for row in names if _owner_is_dead(row[0])]
        if stale:
            self.execute(venv, [f"DROP DATABASE IF EXISTS `{name}`" for name in stale])


def clean_env() -> dict[str, str]:
    """The environment for venv programs (``tests.kit.process.clean_env``): none of the test process's
    Python settings leak in either."""
    return kit_clean_env(drop=("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS"))


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the thread that started it dies (e.g. pytest killed)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_of(stat: str) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[2])


def rss_of_pid(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def rss_of_groups(groups: Iterable[int]) -> int:
    """Resident bytes of every process whose process group is in ``groups``."""
    wanted = set(groups)
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _group_of((entry / "stat").read_text()) in wanted:
                total += int((entry / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we looked
    return total
