"""SQLite backend whose write transactions queue on an OS file lock (decision 011)."""
