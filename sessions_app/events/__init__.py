"""Events: their builders, emission after commit, and the durable archive."""
