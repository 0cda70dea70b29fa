"""Default playbooks for the cloud action families (installed as Playbook rows).

Templates are filled from the incident before the parameters are validated:
``{labels.<key>}`` from the alert's labels, ``{service}``, ``{environment}``.
The label names follow the common exporters (CloudWatch exporter for AWS,
kube-state-metrics for Kubernetes); an incident without the label a step
needs is not planned and goes to humans with the reason. Cloud steps run on
the ``heal.cloud`` queue.
"""

PLAYBOOKS = [
    {
        "name": "aws-asg-scale-out",
        "description": (
            "Add one instance to the Auto Scaling group named by the alert (refused at the group's MaxSize); "
            "the new capacity must be in service. Rollback restores the previous desired capacity."
        ),
        "diagnosis_codes": ["asg_capacity_low"],
        "steps": [
            {
                "action": "aws.asg.set_capacity",
                "params": {"group": "{labels.auto_scaling_group_name}", "increment": 1},
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
        "description": "Reboot the RDS instance named by the alert; it must report 'available' again.",
        "diagnosis_codes": ["rds_unavailable"],
        "steps": [
            {
                "action": "aws.rds.reboot",
                "params": {"db_instance": "{labels.dbinstance_identifier}"},
                "contract": [{"field": "status", "op": "==", "value": "available", "within": 900}],
            }
        ],
        "tier": 3,
        "cooldown_seconds": 3600,
    },
    {
        "name": "k8s-pod-crashloop",
        "description": (
            "Delete the crash-looping pod so its controller replaces it; if the deployment is still not fully "
            "ready, roll out a restart (kubectl rollout restart) and wait for every replica."
        ),
        "diagnosis_codes": ["pod_crashloop"],
        "steps": [
            {
                "action": "k8s.pod.delete",
                "params": {"namespace": "{labels.namespace}", "pod": "{labels.pod}"},
                "contract": [{"field": "uid", "op": "!=", "value": "{snapshot.uid}", "within": 120}],
            },
            {
                "action": "k8s.deployment.rollout_restart",
                "params": {
                    "namespace": "{labels.namespace}",
                    "deployment": "{labels.deployment}",
                    "skip_if_ready": True,
                },
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
            "Restart the unhealthy container named by the alert; it must have started again, be running, "
            "and pass its health check when it has one."
        ),
        "diagnosis_codes": ["container_unhealthy"],
        "steps": [
            {
                "action": "docker.container.restart",
                "params": {"container": "{labels.container}"},
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
