"""rpcdaemon: keeps Neutron routers and DHCP networks on live agents, judged from the bus."""

__version__ = "0.1.0"
