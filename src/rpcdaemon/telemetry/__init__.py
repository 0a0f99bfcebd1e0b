"""What the daemon tells the world: metrics, health endpoints, sd_notify, the audit trail, logging."""
