"""The worker process's adapters: the Celery tasks, the turn loop, streaming one turn, and the model providers."""
