from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from approvals import checkpoints, sinks
from approvals.verification import verify_chain


class Command(BaseCommand):
    help = (
        "Recompute the audit log's hash chain; with --checkpoints, also check it against every signed "
        "checkpoint in those sinks. Exit non-zero naming the first seq that does not hold."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoints",
            action="append",
            default=[],
            metavar="SINK",
            help="a checkpoint sink: file:///path, /path or s3://bucket/prefix/ (repeat for several)",
        )
        parser.add_argument(
            "--public-key",
            metavar="PEM_FILE",
            help="the public key checkpoints must be signed with (default: that of the configured signing key)",
        )

    def handle(self, *args, **options):
        found, problems = [], []
        if options["checkpoints"]:
            key = self._trusted_key(options["public_key"])
            for url in options["checkpoints"]:
                try:
                    good, bad = checkpoints.read_sink(sinks.from_url(url), key)
                except sinks.SinkError as exc:
                    raise CommandError(str(exc)) from None
                if not good and not bad:
                    problems.append(f"{url}: no checkpoint found")
                found += good
                problems += bad
        report = verify_chain(checkpoints=found, problems=problems)
        if report.broken_seq is not None:
            raise CommandError(
                f"audit chain broken at seq {report.broken_seq}: {report.reason} "
                f"({report.count} events verified before it)"
            )
        if report.problems:
            raise CommandError(
                f"audit chain intact ({report.count} events), but: "
                + "; ".join(report.problems[:20])
                + (f" (and {len(report.problems) - 20} more)" if len(report.problems) > 20 else "")
            )
        summary = f"audit chain intact: {report.count} events verified"
        if report.pending:
            summary += f", {report.pending} more waiting to be sealed"
        if options["checkpoints"]:
            latest = report.latest
            summary += (
                f"; {report.checkpoints} checkpoints match (latest: {latest.size} events, signed "
                f"{latest.time:%Y-%m-%d %H:%M:%S} UTC)"
            )
        self.stdout.write(self.style.SUCCESS(summary))

    def _trusted_key(self, path):
        if path:
            try:
                return checkpoints.load_public_key(path)
            except ValueError as exc:
                raise CommandError(f"--public-key: {exc}") from None
        try:
            return checkpoints.public_key()
        except ImproperlyConfigured as exc:
            raise CommandError(f"no key to check checkpoints with ({exc}); give --public-key") from None
