from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("remediation", "0003_run_finished_at")]

    operations = [
        migrations.AlterField(
            model_name="healrun",
            name="family",
            field=models.CharField(
                blank=True,
                choices=[("local", "Local"), ("aws", "Aws"), ("docker", "Docker"), ("kubernetes", "Kubernetes")],
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="healrun",
            constraint=models.CheckConstraint(
                condition=models.Q(("tier__gte", 1), ("tier__lte", 3)), name="healrun_tier_1_to_3"
            ),
        ),
        migrations.AddConstraint(
            model_name="healrun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("finished_at__isnull", False),
                        (
                            "status__in",
                            [
                                "REJECTED",
                                "EXPIRED",
                                "BLOCKED",
                                "ESCALATED",
                                "SUCCEEDED",
                                "ROLLED_BACK",
                                "FAILED",
                                "CANCELLED",
                                "SIMULATED",
                            ],
                        ),
                    ),
                    models.Q(
                        models.Q(
                            (
                                "status__in",
                                [
                                    "REJECTED",
                                    "EXPIRED",
                                    "BLOCKED",
                                    "ESCALATED",
                                    "SUCCEEDED",
                                    "ROLLED_BACK",
                                    "FAILED",
                                    "CANCELLED",
                                    "SIMULATED",
                                ],
                            ),
                            _negated=True,
                        ),
                        ("finished_at__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="healrun_finished_exactly_when_final",
            ),
        ),
        migrations.AddConstraint(
            model_name="healrun",
            constraint=models.CheckConstraint(
                condition=models.Q(("family__in", ["", "local", "aws", "docker", "kubernetes"])),
                name="healrun_family_known",
            ),
        ),
    ]
