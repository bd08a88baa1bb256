"""Transport adapters of the sync package: the nats-server process and the NATS link."""
