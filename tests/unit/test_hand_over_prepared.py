"""A web process prepares its Celery hand-over at start-up (`prepare_hand_over`, called by
config/asgi.py): the first send that finds no worker waiting then publishes its task with a
connection already open and nothing left to import, instead of paying ~40-60 ms for Celery's
set-up inside the work after its commit. Each test runs a process of its own that loads the
ASGI application as Daphne does (real Redis)."""

from __future__ import annotations

import socket

from tests.unit.web_process import run_python

# The broker connection opens on a thread of its own: wait for it, as a request would
# arrive some time after start-up.
STARTED = """
import threading
import config.asgi
for thread in threading.enumerate():
    if thread.name == "prepare-hand-over":
        thread.join(30)
"""

FIRST_HAND_OVER = (
    STARTED
    + """
import sys
from sessions_app.worker.tasks import run_turns

app = run_turns.app
with app.producer_or_acquire() as producer:
    print("connected before the first publish:", bool(producer.connection.connected))
imported = []
sys.addaudithook(lambda event, args: imported.append(args[0]) if event == "import" else None)
probe = app.conf.task_default_queue + ".probe"
run_turns.apply_async(([],), queue=probe)  # a queue of its own: no worker takes it
print("imported by the first publish:", sorted(set(imported)))
with app.connection_for_write() as connection:
    connection.default_channel.queue_delete(probe)
"""
)


def test_the_first_hand_over_finds_celery_ready():
    result = run_python(FIRST_HAND_OVER)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "connected before the first publish: True" in lines
    assert "imported by the first publish: []" in lines


def test_a_broker_out_of_reach_does_not_stop_the_web_process_from_starting():
    result = run_python(STARTED + "print('started')", CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "started"
    assert "the broker is not reachable yet" in result.stderr


def test_a_broker_that_never_answers_does_not_hold_up_start_up():
    with socket.socket() as silent:  # takes connections (the kernel's backlog), says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = run_python("import config.asgi\nprint('started')", CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "started"
