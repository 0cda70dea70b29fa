from django.db import models

GENESIS_HASH = "0" * 64


class AuditEvent(models.Model):
    """One link of the append-only, hash-chained audit log.

    ``hash`` is the sha256 of the canonical JSON of every other field (see
    ``approvals.audit.canonical``), ``prev_hash`` the previous link's hash.
    Database triggers reject UPDATE and DELETE on this table.
    """

    seq = models.BigIntegerField(primary_key=True)
    at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="User name, or system:<component>.")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]
        indexes = [
            # "what did GRACE do to this object?"
            models.Index(fields=["object_type", "object_id", "seq"], name="audit_object_idx"),
            # audit browsing by time and by action
            models.Index(fields=["at"], name="audit_at_idx"),
            models.Index(fields=["action", "seq"], name="audit_action_idx"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_seq_positive")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type}:{self.object_id}"
