"""Model providers. A provider turns a turn's context into a stream of parts; see base.py."""
