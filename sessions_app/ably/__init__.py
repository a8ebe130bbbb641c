"""Every session on an Ably channel, in the wire format of `@ably/ai-transport` 0.8
(docs/ably.md).

Off unless `ABLY_API_KEY` is set. Then a mirror process (`manage.py ably_mirror`) tails
each session's event log in Redis and publishes it to the session's channel, off the token
path; it also listens on those channels for `ai-cancel` messages from Ably clients. Members
get scoped tokens from `POST /api/sessions/{id}/ably-token`.

- `config.py`: the settings, the channel of a session, the SDK clients;
- `mapping.py`: our events as AI Transport messages (pure, no I/O);
- `writer.py`: publishing one channel's messages: stable ids, retries, paced appends;
- `mirror.py`: the process: which sessions to mirror, catching up, repairing gaps;
- `inbound.py`: cancels from Ably clients;
- `tokens.py`, `views.py`: token requests for members;
- `stats.py`: the counters an operator reads.
"""
