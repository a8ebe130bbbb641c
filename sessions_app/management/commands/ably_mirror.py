"""`manage.py ably_mirror`: run the Ably mirror (sessions_app/ably/mirror.py) as its own
process until SIGTERM or Ctrl-C; `--stats` prints the deployment's figures and exits."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_app.ably.config import ably_config
from sessions_app.ably.mirror import Mirror
from sessions_app.ably.stats import read_stats
from sessions_app.infra.live_state import sync_redis


class Command(BaseCommand):
    help = "Mirror every session to its Ably channel, and take cancels from Ably clients (docs/ably.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stats", action="store_true", help="print the mirror's figures and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["stats"]:
            self.stdout.write(json.dumps(read_stats(sync_redis()), indent=2))
            return
        config = ably_config()
        if config is None:
            raise CommandError("ABLY_API_KEY is not set: nothing to mirror to")
        faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints where every thread is
        asyncio.run(self._run(Mirror(config)))

    async def _run(self, mirror: Mirror) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await mirror.run(stop)
