"""Create (or reset) the demo user that `make run` prints: a staff user who can use admin."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the demo user (and a second one, for trying two users in one session)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        for username, staff in ((options["username"], True), (f"{options['username']}2", False)):
            user, _ = users.objects.get_or_create(username=username)
            user.set_password(options["password"])
            user.is_staff = user.is_superuser = staff
            user.save()
        self.stdout.write(
            f"demo users: {options['username']} (admin) and {options['username']}2, password {options['password']}"
        )
