"""rpcdaemon.conf and neutron.conf: the settings schema and strict readers, broker TLS settings."""
