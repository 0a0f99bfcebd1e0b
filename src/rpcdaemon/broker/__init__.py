"""The only kombu user: ``connection`` (connections, TLS per failover host, raw publishes), ``link`` (the
listener's link), ``leader_lock`` (the leadership lock), ``control_link`` (the control records), ``checks``
(URL, host name, port and TLS checks), ``amqpurl`` (URLs as operators write them)."""
