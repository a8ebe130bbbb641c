"""Multi-device AI chat sessions: turns, cancellation, the conversation tree and the event
stream. A reusable Django app; see docs/architecture.md."""
