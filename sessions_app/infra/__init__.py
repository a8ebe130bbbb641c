"""Infrastructure shared by the web and worker processes: the live state in Redis, call
batching, database threads, interpreter tuning."""
