"""``rpcdaemon demo``: the scripted failover and the in-memory Neutron it runs on."""
