"""The web process's adapters: the websocket consumer and its hub, the HTTP API, long-poll
waits, pages, authentication."""
