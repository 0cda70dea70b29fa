"""The shipped cloud playbooks are coherent with the cloud actions and what they observe."""

from __future__ import annotations

import re

import pytest

import remediation.actions.aws  # noqa: F401 - registers the actions
import remediation.actions.docker  # noqa: F401
import remediation.actions.kubernetes  # noqa: F401
from incidents.choices import KNOWN_DIAGNOSES
from remediation.actions.base import registry
from remediation.actions.cloud_playbooks import PLAYBOOKS
from remediation.contracts import validate_contract
from remediation.planner import validate_steps

CLOUD = [a for a in registry.all() if a.family in ("aws", "docker", "kubernetes")]
# An example inventory resource of each kind the cloud playbooks bind to, and the one label they read.
EXAMPLE_RESOURCES = {
    "aws_asg": {"target": "web"},
    "aws_rds": {"target": "orders-db"},
    "k8s_deployment": {"target": "api", "scope": {"namespace": "shop"}},
    "docker_container": {"target": "api-1"},
}
EXAMPLE_LABELS = {"pod": "api-5d8f7c9b6d-x2x7q"}
TEMPLATE = re.compile(r"^\{labels\.([A-Za-z0-9_]+)\}$")


def bound(action, step) -> dict:
    """The step's parameters as the planner makes them: labels filled, the resource's bound on top."""
    filled = {}
    for name, value in step.get("params", {}).items():
        match = TEMPLATE.match(value) if isinstance(value, str) else None
        filled[name] = EXAMPLE_LABELS[match.group(1)] if match else value
    return action.validate({**filled, **action.bind(EXAMPLE_RESOURCES[action.resource_kind])})


def test_every_cloud_action_is_registered_in_its_family():
    assert {(a.family, a.name) for a in CLOUD} == {
        ("aws", "aws.asg.set_capacity"),
        ("aws", "aws.ec2.reboot"),
        ("aws", "aws.rds.reboot"),
        ("docker", "docker.container.restart"),
        ("docker", "docker.service.scale"),
        ("kubernetes", "k8s.deployment.rollout_restart"),
        ("kubernetes", "k8s.deployment.scale"),
        ("kubernetes", "k8s.pod.delete"),
    }


@pytest.mark.parametrize("action", CLOUD, ids=lambda a: a.name)
def test_each_cloud_action_declares_what_the_pipeline_needs(action):
    assert action.tier in (1, 2, 3)
    assert 0 < action.timeout <= 300
    assert action.target_param in action.params().fields
    assert action.scope_params and set(action.scope_params) <= set(action.params().fields)
    assert action.snapshot is not None  # contracts compare against the state before the action
    validate_contract(action.default_contract)


@pytest.mark.parametrize(
    ("name", "params", "same", "other"),
    [
        ("docker.container.restart", {"container": "api-1"}, "docker:api-1", {"host": "edge-2"}),
        (
            "docker.service.scale",
            {"project": "shop", "service": "api", "replicas": 2},
            "docker:shop/api",
            {"project": "blog"},
        ),
        (
            "k8s.deployment.scale",
            {"namespace": "shop", "deployment": "api", "replicas": 2},
            "kubernetes:shop/api",
            {"namespace": "blog"},
        ),
        (
            "k8s.pod.delete",
            {"namespace": "shop", "deployment": "api", "pod": "api-1"},
            "kubernetes:shop/api",
            {"context": "prod-eu"},
        ),
        ("aws.ec2.reboot", {"instance_id": "i-0123456789abcdef0"}, "aws:i-0123456789abcdef0", {"region": "eu-west-1"}),
    ],
)
def test_same_named_things_elsewhere_are_other_targets(name, params, same, other):
    """Breakers, rate limits, cooldowns and hourly budgets are per target: a deployment called
    api in another namespace, or a container on another engine, is not the same thing."""
    action = registry.get(name)

    assert action.target(params) == same
    assert action.target({**params, **other}) != same


def test_only_actions_with_a_real_inverse_can_be_rolled_back():
    assert {a.name for a in CLOUD if a.reversible} == {
        "aws.asg.set_capacity",
        "docker.service.scale",
        "k8s.deployment.rollout_restart",
        "k8s.deployment.scale",
    }


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p["name"])
def test_each_cloud_playbook_binds_every_step_to_an_inventory_resource(playbook):
    assert re.fullmatch(r"[a-z0-9-]+", playbook["name"])
    assert playbook["tier"] in (1, 2, 3)
    assert playbook["cooldown_seconds"] > 0
    assert set(playbook["diagnosis_codes"]) <= set(KNOWN_DIAGNOSES)
    validate_steps(playbook["steps"])
    for step in playbook["steps"]:
        action = registry.get(step["action"])
        assert not set(step.get("params", {})) & set(action.binds), "a target parameter is set by the step"
        params = bound(action, step)
        validate_contract(step["contract"])
        assert action.family != "local"  # so the pipeline routes it to heal.cloud
        assert action.target(params).startswith(f"{action.family}:")


def test_the_cloud_playbooks_cover_the_cloud_diagnoses_at_their_declared_tiers():
    tiers = {code: p["tier"] for p in PLAYBOOKS for code in p["diagnosis_codes"]}

    assert tiers == {"asg_capacity_low": 2, "rds_unavailable": 3, "pod_crashloop": 2, "container_unhealthy": 1}


def test_every_contract_field_is_a_fact_the_action_really_observes(moto, docker_engine, k8s):
    aws = remediation.actions.aws
    aws.client("ec2").create_launch_template(
        LaunchTemplateName="web", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    )
    aws.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchTemplate={"LaunchTemplateName": "web"},
        MinSize=1,
        MaxSize=3,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    aws.client("rds").create_db_instance(
        DBInstanceIdentifier="orders-db", DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=20
    )
    docker_engine.containers.run(
        docker_engine.test_image,
        ["sleep", "1000"],
        name="api-1",
        detach=True,
        init=True,
        network_mode="none",
        labels={docker_engine.test_label: "1"},
    )
    k8s.add_deployment("shop", "api", replicas=1, crashloop=1)
    EXAMPLE_LABELS["pod"] = k8s.cluster.pods_of("shop", "api")[0]["metadata"]["name"]

    for playbook in PLAYBOOKS:
        for step in playbook["steps"]:
            action = registry.get(step["action"])
            facts = action.observe(bound(action, step))
            missing = {p["field"] for p in step["contract"]} - set(facts)
            assert not missing, f"{playbook['name']}: {action.name} does not observe {missing}"


def test_a_long_target_is_shortened_to_fit_and_stays_distinct():
    from remediation.actions.base import TARGET_MAX_LENGTH

    action = registry.get("k8s.deployment.scale")
    params = {"context": "c" * 200, "namespace": "shop", "deployment": "d" * 253, "replicas": 1}

    long_target = action.target(params)
    other = action.target({**params, "namespace": "blog"})

    assert len(long_target) == len(other) == TARGET_MAX_LENGTH
    assert long_target != other
    assert long_target == action.target(dict(params))  # the same thing, the same key
