"""``python -m tests.harness`` (or ``scripts/neutron-harness``): run the e2e harness by hand.

  venv                  build or check the cached Neutron venv, print its path and the time taken
  up [--hosts N] ...    start Neutron (+ N fake hosts with L3, DHCP and OVS agents), print where
                        everything is, run until Ctrl-C / SIGTERM, then stop and clean up
  clean                 drop databases and vhosts left by dead sessions

For debugging the daemon against a real Neutron: ``up --hosts 3``, then point rpcdaemon at the
printed neutron.conf.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType

from tests.harness.fleet import Fleet
from tests.harness.neutron_server import HarnessError, NeutronServer
from tests.harness.neutron_venv import VenvUnavailable, ensure_neutron_venv
from tests.harness.seed import SeedClient
from tests.harness.services import MySQL, Rabbit, ServiceUnavailable


def cmd_venv(args: argparse.Namespace) -> None:
    venv = ensure_neutron_venv()
    print(f"venv: {venv.path}\nbuilt: {venv.built}\nseconds: {venv.seconds:.2f}")


def cmd_clean(args: argparse.Namespace) -> None:
    MySQL().drop_stale_databases(ensure_neutron_venv())
    Rabbit().delete_stale_vhosts()
    print("stale databases and vhosts dropped")


def cmd_up(args: argparse.Namespace) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = NeutronServer(
        agent_down_time=args.agent_down_time,
        report_interval=args.report_interval,
        allow_automatic_l3agent_failover=args.l3_failover,
        allow_automatic_dhcp_failover=args.dhcp_failover,
        keep_state=args.keep_state,
    )
    with server:
        print(f"url: {server.url}\nneutron.conf: {server.conf_path}\ntransport_url: {server.transport_url}")
        print(f"state dir: {server.state_dir}\nlogs: {server.log_dir}")
        print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in server.timings.items()))
        with Fleet.for_server(server) as fleet:
            if args.hosts:
                began = time.monotonic()
                for i in range(args.hosts):
                    fleet.add_host(f"host-{i}")
                fleet.wait_registered(server.url, timeout=60)
                print(f"fake hosts: {args.hosts} registered in {time.monotonic() - began:.2f} s")
            if args.routers:
                began = time.monotonic()
                rest = SeedClient(server.url)
                routers = rest.create_routers_bulk(args.routers)
                if args.hosts:
                    rest.bind_routers_bulk(rest.agent_id("host-0", "L3 agent"), routers)
                print(f"routers: {len(routers)} created in {time.monotonic() - began:.2f} s")
            print(f"memory: neutron {server.rss_bytes() / 2**20:.0f} MiB, fake agents "
                  f"{fleet.rss_bytes() / 2**20:.0f} MiB\nrunning; Ctrl-C stops", flush=True)
            stop.wait()
    print("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neutron-harness", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("venv", help="build or check the cached Neutron venv").set_defaults(func=cmd_venv)
    sub.add_parser("clean", help="drop leftovers of dead sessions").set_defaults(func=cmd_clean)
    up = sub.add_parser("up", help="run Neutron (and fake agents) until Ctrl-C")
    up.add_argument("--hosts", type=int, default=0, help="fake hosts, each with L3, DHCP and OVS agents")
    up.add_argument("--routers", type=int, default=0, help="routers to create (bound to host-0 if any)")
    up.add_argument("--agent-down-time", type=int, default=10)
    up.add_argument("--report-interval", type=int, default=2)
    up.add_argument("--l3-failover", action="store_true", help="allow_automatic_l3agent_failover")
    up.add_argument("--dhcp-failover", action="store_true", help="allow_automatic_dhcp_failover")
    up.add_argument("--keep-state", action="store_true", help="keep config and logs after stopping")
    up.set_defaults(func=cmd_up)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (VenvUnavailable, ServiceUnavailable, HarnessError) as exc:
        print(f"neutron-harness: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
