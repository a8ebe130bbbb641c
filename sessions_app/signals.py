"""Django signals that let site code react to the chat without patching it. Each is sent
after the database commit of the change it announces.

    from django.dispatch import receiver
    from sessions_app.signals import turn_ended

    @receiver(turn_ended)
    def bill(sender, turn, reason, **kwargs): ...
"""

from django.dispatch import Signal

turn_started = Signal()  # kwargs: turn
turn_ended = Signal()  # kwargs: turn, reason ("complete", "cancelled" or "error")
message_created = Signal()  # kwargs: node
