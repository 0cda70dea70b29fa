"""Default playbooks for the cloud action families (installed as Playbook rows).

Every step acts on a resource of the incident's service in the inventory: the Auto
Scaling group, RDS instance, Kubernetes deployment or container, with its account and
region, context and namespace, or engine. When the service has several resources of
the kind, the alert names one with the label ``resource``. The crash-looping pod is
the one label-filled parameter (``{labels.pod}``, kube-state-metrics' label), and the
pod must belong to the inventory's deployment. An incident that cannot be bound is
not planned and goes to humans with the reason. Cloud steps run on the ``heal.cloud``
queue.
"""

PLAYBOOKS = [
    {
        "name": "aws-asg-scale-out",
        "description": (
            "Add one instance to the service's Auto Scaling group (refused at the group's MaxSize); "
            "the new capacity must be in service. Rollback restores the previous desired capacity."
        ),
        "diagnosis_codes": ["asg_capacity_low"],
        "steps": [
            {
                "action": "aws.asg.set_capacity",
                "params": {"increment": 1},
                "contract": [
                    {"field": "desired_capacity", "op": "==", "value": "{snapshot.target}", "within": 60},
                    {"field": "in_service", "op": ">=", "value": "{snapshot.target}", "within": 600},
                ],
            }
        ],
        "tier": 2,
        "cooldown_seconds": 900,
    },
    {
        "name": "aws-rds-reboot",
        "description": "Reboot the service's RDS instance; it must report 'available' again.",
        "diagnosis_codes": ["rds_unavailable"],
        "steps": [
            {
                "action": "aws.rds.reboot",
                "contract": [{"field": "status", "op": "==", "value": "available", "within": 900}],
            }
        ],
        "tier": 3,
        "cooldown_seconds": 3600,
    },
    {
        "name": "k8s-pod-crashloop",
        "description": (
            "Delete the crash-looping pod of the service's deployment so it is replaced; if the deployment is "
            "still not fully ready, roll out a restart (kubectl rollout restart) and wait for every replica."
        ),
        "diagnosis_codes": ["pod_crashloop"],
        "steps": [
            {
                "action": "k8s.pod.delete",
                "params": {"pod": "{labels.pod}"},
                "allow": {"pod": {"pattern": r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"}},
                "contract": [{"field": "uid", "op": "!=", "value": "{snapshot.uid}", "within": 120}],
            },
            {
                "action": "k8s.deployment.rollout_restart",
                "params": {"skip_if_ready": True},
                "contract": [
                    {"field": "rollout_complete", "op": "==", "value": True, "within": 300},
                    {"field": "all_ready", "op": "==", "value": True, "within": 300},
                ],
            },
        ],
        "tier": 2,
        "cooldown_seconds": 600,
    },
    {
        "name": "docker-container-restart",
        "description": (
            "Restart the service's unhealthy container; it must have started again, be running, "
            "and pass its health check when it has one."
        ),
        "diagnosis_codes": ["container_unhealthy"],
        "steps": [
            {
                "action": "docker.container.restart",
                "contract": [
                    {"field": "started_at", "op": "!=", "value": "{snapshot.started_at}"},
                    {"field": "status", "op": "==", "value": "running", "within": 30},
                    {"field": "health", "op": "in", "value": ["healthy", "none"], "within": 90},
                ],
            }
        ],
        "tier": 1,
        "cooldown_seconds": 300,
    },
]
