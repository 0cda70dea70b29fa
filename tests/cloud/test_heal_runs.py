"""Cloud heal runs end to end: intake -> pipeline on a real Celery worker -> moto / dockerd / the stand-in."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Permission

from approvals import services as approvals
from approvals.models import ApprovalRequest
from incidents.models import DiagnosisRule
from incidents.services import Signal, ingest
from remediation.actions.aws import client as aws_client
from remediation.actions.cloud_playbooks import PLAYBOOKS
from remediation.choices import RunStatus
from remediation.models import ContractResult, HealRun, Playbook
from tests.support import inventory
from tests.support.runs import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("cloud_settles")]


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_user("cloud-oncall", password="pw-oncall-123456")
    user.user_permissions.add(Permission.objects.get(codename="approve_tier2"))
    return user


def _install(name: str, **changes) -> Playbook:
    (spec,) = [p for p in PLAYBOOKS if p["name"] == name]
    return Playbook.objects.create(**{**spec, "cooldown_seconds": 0, **changes})


def _incident(code: str, title: str, labels: dict):
    DiagnosisRule.objects.get_or_create(
        name=f"test: {code}", defaults={"code": code, "position": 1, "title_regex": f"^{title}$", "confidence": 0.9}
    )
    return ingest(
        Signal(source="api", title=title, service="shop", environment="staging", severity="critical", labels=labels)
    ).incident


def _approve(incident, user) -> None:
    run = wait_for_run(incident.pk, statuses=(RunStatus.AWAITING_APPROVAL,))
    request = ApprovalRequest.objects.get(run=run, status="pending")
    approvals.decide(request.pk, user=user, approve=True, reason="capacity change reviewed")


def test_an_unhealthy_container_incident_is_healed_by_a_restart(cloud_worker, docker_engine):
    container = docker_engine.containers.run(
        docker_engine.test_image,
        ["sh", "-c", "touch /tmp/healthy; exec sleep 1000"],
        name="api-1",
        detach=True,
        init=True,
        network_mode="none",
        labels={docker_engine.test_label: "1"},
        healthcheck={"test": ["CMD", "test", "-e", "/tmp/healthy"], "interval": 200_000_000, "retries": 1},
    )
    container.exec_run(["rm", "/tmp/healthy"])
    before = container.attrs["State"]["StartedAt"]
    _install("docker-container-restart")

    inventory.resource("shop", "docker_container", "api-1")
    run = wait_for_run(_incident("container_unhealthy", "api-1 unhealthy", {}).pk)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert run.family == "docker"
    container.reload()
    assert container.attrs["State"]["StartedAt"] != before
    results = ContractResult.objects.filter(run=run, phase="execute")
    assert {r.field: r.passed for r in results} == {"started_at": True, "status": True, "health": True}


def test_a_low_capacity_group_is_scaled_out_after_approval(cloud_worker, moto, operator):
    aws_client("ec2").create_launch_template(
        LaunchTemplateName="web", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    )
    asg = aws_client("autoscaling")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchTemplate={"LaunchTemplateName": "web"},
        MinSize=1,
        MaxSize=4,
        DesiredCapacity=2,
        AvailabilityZones=["us-east-1a"],
    )
    _install("aws-asg-scale-out")
    inventory.resource("shop", "aws_asg", "web")
    incident = _incident("asg_capacity_low", "web capacity low", {"auto_scaling_group_name": "web"})

    _approve(incident, operator)
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert run.tier == 2
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 3


def test_a_run_for_an_unconfigured_cluster_is_blocked_with_the_reason(cloud_worker, k8s):
    cloud_worker.kubeconfig.unlink(missing_ok=True)  # the worker has no cluster to talk to
    Playbook.objects.create(
        name="k8s-delete-pod",
        diagnosis_codes=["pod_crashloop"],
        steps=[{"action": "k8s.pod.delete", "params": {"pod": "{labels.pod}"}, "allow": {"pod": {"pattern": ".+"}}}],
        tier=1,
        cooldown_seconds=0,
    )

    inventory.resource("shop", "k8s_deployment", "api", namespace="shop")
    run = wait_for_run(_incident("pod_crashloop", "api crashloop", {"namespace": "shop", "pod": "api-1"}).pk)

    assert run.status == RunStatus.BLOCKED
    assert "kubernetes: no kubeconfig at" in run.status_reason


def test_a_crash_looping_pod_is_replaced_by_the_default_playbook(cloud_worker, k8s, operator):
    k8s.write_kubeconfig(cloud_worker.kubeconfig)
    k8s.add_deployment("shop", "api", replicas=2, crashloop=1)
    looping = k8s.cluster.pods_of("shop", "api")[0]["metadata"]["name"]
    _install("k8s-pod-crashloop")
    inventory.resource("shop", "k8s_deployment", "api", namespace="shop")
    incident = _incident("pod_crashloop", "api crashloop", {"namespace": "shop", "pod": looping, "deployment": "api"})

    _approve(incident, operator)
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    pods = k8s.cluster.pods_of("shop", "api")
    assert looping not in {p["metadata"]["name"] for p in pods}
    assert len(pods) == 2 and all(p["status"]["containerStatuses"][0]["ready"] for p in pods)


def test_a_scale_the_controller_cannot_satisfy_is_rolled_back(cloud_worker, k8s, operator):
    k8s.write_kubeconfig(cloud_worker.kubeconfig)
    k8s.add_deployment("shop", "api", replicas=2)
    k8s.fail_rollouts = True
    Playbook.objects.create(
        name="k8s-scale-api",
        diagnosis_codes=["latency_spike"],
        steps=[
            {
                "action": "k8s.deployment.scale",
                "params": {"replicas": 4},
                "contract": [{"field": "ready_replicas", "op": "==", "value": "{params.replicas}", "within": 2}],
            }
        ],
        tier=2,
        cooldown_seconds=0,
    )
    inventory.resource("shop", "k8s_deployment", "api", namespace="shop")
    incident = _incident("latency_spike", "api slow", {})
    started = time.monotonic()

    _approve(incident, operator)
    run = wait_for_run(incident.pk)

    assert run.status == RunStatus.ROLLED_BACK, run.status_reason
    assert k8s.deployment("shop", "api")["spec"]["replicas"] == 2
    assert time.monotonic() - started < 30
    assert HealRun.objects.get(pk=run.pk).family == "kubernetes"
