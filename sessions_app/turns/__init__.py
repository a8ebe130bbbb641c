"""The turn's lifecycle: sending (a turn is created, queued or refused), its state
transitions, and the reads on its path."""
