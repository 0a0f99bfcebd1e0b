"""The only kombu user: the AMQP connection, the listener's link, the leader lock, the control records."""
