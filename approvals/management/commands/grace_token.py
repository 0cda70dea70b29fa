"""`manage.py grace_token create USER [--name NAME]` | `list [USER]` | `revoke ID`: users' API tokens."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals import tokens
from approvals.models import ApiToken

ACTOR = "system:grace_token"


class Command(BaseCommand):
    help = "Issue (the key is printed once), list or revoke users' API tokens (Authorization: Token <key>)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        create = sub.add_parser("create", help="issue a token and print its key, once")
        create.add_argument("user")
        create.add_argument("--name", default="cli", help="what it is for (unique per user)")
        listing = sub.add_parser("list", help="tokens, by their first characters")
        listing.add_argument("user", nargs="?")
        revoke = sub.add_parser("revoke", help="revoke a token by id")
        revoke.add_argument("id", type=int)

    def handle(self, *args, **opts):
        getattr(self, f"_{opts['verb']}")(opts)

    def _create(self, opts) -> None:
        user = get_user_model().objects.filter(username=opts["user"]).first()
        if user is None:
            raise CommandError(f"no user named {opts['user']!r}")
        try:
            _, key = tokens.issue(user, name=opts["name"], actor=ACTOR)
        except ValueError as exc:
            raise CommandError(f"{exc}: choose another --name, or revoke it first") from None
        self.stdout.write(key)

    def _list(self, opts) -> None:
        rows = ApiToken.objects.select_related("user").order_by("user__username", "name")
        if opts["user"]:
            rows = rows.filter(user__username=opts["user"])
        for token in rows:
            used = token.last_used_at.isoformat(timespec="seconds") if token.last_used_at else "never"
            self.stdout.write(f"{token.pk}\t{token.user.get_username()}\t{token.name}\t{token.hint}…\tlast used {used}")

    def _revoke(self, opts) -> None:
        token = ApiToken.objects.select_related("user").filter(pk=opts["id"]).first()
        if token is None:
            raise CommandError(f"no token with id {opts['id']}")
        tokens.revoke(token, actor=ACTOR)
        self.stdout.write(f"revoked {token.name} of {token.user.get_username()}")
