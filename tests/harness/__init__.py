"""The project's end-to-end harness: a real Neutron 29 server and a fleet of fake agents.

Used by ``tests/e2e`` (fixtures in its conftest), the benchmarks in ``bench/`` and the
``neutron-harness`` script. Nothing here is imported by ``rpcdaemon`` itself.
"""
