"""Cloud steps act on the incident's service's inventory resources only: an alert naming another container,
namespace, deployment, pod or Auto Scaling group executes nothing there (real worker, dockerd, moto, stand-in)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from approvals import services as approvals
from incidents.models import DiagnosisRule
from incidents.services import Signal, ingest
from remediation.actions.aws import client as aws_client
from remediation.actions.cloud_playbooks import PLAYBOOKS
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, HealRun, Playbook
from tests.support import inventory
from tests.support.runs import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("cloud_settles")]


def install(name: str, **changes) -> Playbook:
    (spec,) = [p for p in PLAYBOOKS if p["name"] == name]
    return Playbook.objects.create(**{**spec, "cooldown_seconds": 0, **changes})


def incident(code: str, title: str, labels: dict, service: str = "shop"):
    """An incident diagnosed ``code`` (every title starting with the same word gets the same diagnosis)."""
    DiagnosisRule.objects.get_or_create(
        name=f"test: {code}",
        defaults={"code": code, "position": 1, "title_regex": f"^{title.split()[0]} ", "confidence": 0.9},
    )
    return ingest(Signal(source="api", title=title, service=service, severity="critical", labels=labels)).incident


def assert_nothing_executed(run: HealRun) -> None:
    assert run.status in (RunStatus.ESCALATED, RunStatus.BLOCKED), (run.status, run.status_reason)
    assert not ActionAttempt.objects.filter(run=run, phase="execute", status="succeeded").exists()


def test_a_container_alert_cannot_restart_another_services_container(cloud_worker, docker_engine):
    def start(name: str):
        return docker_engine.containers.run(
            docker_engine.test_image,
            ["sleep", "1000"],
            name=name,
            detach=True,
            init=True,
            network_mode="none",
            labels={docker_engine.test_label: "1"},
        )

    start("shop-api"), start("shop-worker")
    database = start("billing-db")
    database.reload()
    started = database.attrs["State"]["StartedAt"]
    inventory.resource("shop", "docker_container", "shop-api", name="api")
    inventory.resource("shop", "docker_container", "shop-worker", name="worker")
    inventory.resource("billing", "docker_container", "billing-db", name="db")
    install("docker-container-restart", tier=1)

    runs = [
        wait_for_run(incident("container_unhealthy", f"unhealthy {i}", labels).pk)
        for i, labels in enumerate([{"resource": "db"}, {"container": "billing-db"}, {"resource": "billing-db"}])
    ]

    for run in runs:
        assert_nothing_executed(run)
        assert run.status == RunStatus.ESCALATED
    database.reload()
    assert database.attrs["State"]["StartedAt"] == started


def test_a_crashloop_alert_cannot_reach_another_namespace_deployment_or_pod(cloud_worker, k8s):
    k8s.write_kubeconfig(cloud_worker.kubeconfig)
    k8s.add_deployment("shop", "api", replicas=1, crashloop=1)
    k8s.add_deployment("shop", "payments", replicas=1, crashloop=1)
    k8s.add_deployment("billing", "ledger", replicas=1, crashloop=1)
    inventory.resource("shop", "k8s_deployment", "api", name="api", namespace="shop")
    payments_pod = k8s.cluster.pods_of("shop", "payments")[0]["metadata"]["name"]
    billing_pod = k8s.cluster.pods_of("billing", "ledger")[0]["metadata"]["name"]
    (shipped,) = [p for p in PLAYBOOKS if p["name"] == "k8s-pod-crashloop"]
    install("k8s-pod-crashloop", tier=1, steps=shipped["steps"][:1])  # its pod step alone, at tier 1
    attempts = [
        {"namespace": "billing", "pod": billing_pod},  # a pod in another namespace
        {"pod": payments_pod, "deployment": "payments"},  # another deployment's pod in the same namespace
        {"pod": "../../secrets"},  # not a pod name at all
    ]

    runs = [wait_for_run(incident("pod_crashloop", f"crashloop {i}", labels).pk) for i, labels in enumerate(attempts)]

    for run in runs:
        assert_nothing_executed(run)
    assert runs[2].status == RunStatus.ESCALATED and "does not match the pattern" in runs[2].status_reason
    assert "is not selected by deployment shop/api" in runs[1].status_reason
    assert payments_pod in {p["metadata"]["name"] for p in k8s.cluster.pods_of("shop", "payments")}
    assert billing_pod in {p["metadata"]["name"] for p in k8s.cluster.pods_of("billing", "ledger")}


def test_a_capacity_alert_cannot_scale_another_auto_scaling_group(cloud_worker, moto, django_user_model):
    aws_client("ec2").create_launch_template(
        LaunchTemplateName="shop-lt", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    )
    asg = aws_client("autoscaling")
    for name in ("shop-web", "billing-batch"):
        asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": "shop-lt"},
            MinSize=1,
            MaxSize=5,
            DesiredCapacity=1,
            AvailabilityZones=["us-east-1a"],
        )
    inventory.resource("shop", "aws_asg", "shop-web", name="web")
    inventory.resource("shop", "aws_rds", "shop-db", name="db")
    install("aws-asg-scale-out", tier=1)
    attempts = [{"auto_scaling_group_name": "billing-batch", "resource": "batch"}, {"resource": "billing-batch"}]

    runs = [
        wait_for_run(incident("asg_capacity_low", f"capacity low {i}", labels).pk) for i, labels in enumerate(attempts)
    ]

    for run in runs:
        assert_nothing_executed(run)
        assert "names no aws_asg resource of service shop" in run.status_reason
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["billing-batch"])["AutoScalingGroups"]
    assert groups[0]["DesiredCapacity"] == 1

    own = incident("asg_capacity_low", "capacity low own", {"auto_scaling_group_name": "x"})
    waiting = wait_for_run(own.pk, statuses=(RunStatus.AWAITING_APPROVAL,))  # set_capacity is a tier-2 action
    operator = django_user_model.objects.create_user("asg-operator", password="pw-asg-operator-1")
    operator.user_permissions.add(Permission.objects.get(codename="approve_tier2"))
    request = waiting.approval_requests.get(status="pending")
    approvals.decide(request.pk, user=django_user_model.objects.get(pk=operator.pk), approve=True, reason="ok")
    own = wait_for_run(own.pk)

    assert own.status == RunStatus.SUCCEEDED, own.status_reason  # the label is ignored: the inventory's group
    web = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["shop-web"])["AutoScalingGroups"][0]
    assert web["DesiredCapacity"] == 2
