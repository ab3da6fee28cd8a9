"""Load tests of the running service: locust users per endpoint, EA against self-attention."""
