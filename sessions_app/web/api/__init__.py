"""The HTTP API (DRF). Views parse, call one service or selector, and answer."""
