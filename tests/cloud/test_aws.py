"""AWS executors against a real moto server, through boto3 with an endpoint URL."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import ValidationError

import remediation.actions.aws as aws
from remediation import contracts
from remediation.actions.base import ActionRefused, ActionUnavailable, registry
from remediation.cloud_status import NotConfigured

AMI = "ami-12c6146b"  # one of moto's built-in images


def _boto(service: str):
    return aws.client(service)


@pytest.fixture
def group(moto):
    """An Auto Scaling group 'web' with min 1, max 4, desired 2."""
    template = {"ImageId": AMI, "InstanceType": "t3.micro"}
    _boto("ec2").create_launch_template(LaunchTemplateName="web", LaunchTemplateData=template)
    _boto("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchTemplate={"LaunchTemplateName": "web"},
        MinSize=1,
        MaxSize=4,
        DesiredCapacity=2,
        AvailabilityZones=["us-east-1a"],
    )
    return "web"


def _verify(action, params, state, contract=None):
    results = contracts.verify(contract or action.default_contract, lambda: action.observe(params), params, state)
    return {r.field: (r.passed, r.actual) for r in results}


def test_scaling_a_group_out_meets_its_contract_and_rollback_restores_the_old_capacity(group, tmp_path):
    action = registry.get("aws.asg.set_capacity")
    params = action.validate({"group": group, "desired": 4})

    state = action.snapshot(params, tmp_path)
    result = action.execute(params)

    assert state == {"desired_capacity": 2, "min_size": 1, "max_size": 4, "target": 4}
    assert result == {"group": "web", "previous": 2, "desired": 4}
    assert _verify(action, params, state) == {"desired_capacity": (True, 4), "in_service": (True, 4)}

    action.rollback(params, state, tmp_path)

    assert action.observe(params)["desired_capacity"] == 2
    assert contracts.verify(
        [{"field": "desired_capacity", "op": "==", "value": "{snapshot.desired_capacity}", "within": 10}],
        lambda: action.observe(params),
        params,
        state,
    )[0].passed


def test_scaling_out_by_an_increment_targets_current_plus_increment(group, tmp_path):
    action = registry.get("aws.asg.set_capacity")
    params = action.validate({"group": group, "increment": "1"})

    state = action.snapshot(params, tmp_path)
    action.execute(params)

    assert state["target"] == 3
    assert _verify(action, params, state) == {"desired_capacity": (True, 3), "in_service": (True, 3)}


@pytest.mark.parametrize("params", [{"desired": 5}, {"desired": 0}, {"increment": 3}])
def test_a_capacity_outside_min_max_is_refused_and_nothing_changes(group, params):
    action = registry.get("aws.asg.set_capacity")
    params = action.validate({"group": group, **params})

    with pytest.raises(ActionRefused, match=r"outside web's min\.\.max \(1\.\.4\)"):
        action.execute(params)

    assert action.observe(params)["desired_capacity"] == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group": "web"}, "desired"),
        ({"group": "web", "desired": 2, "increment": 1}, "desired"),
        ({"group": "web", "increment": 0}, "increment"),
        ({"group": "web", "desired": -1}, "desired"),
        ({"group": "web", "desired": 1, "region": "mars"}, "region"),
    ],
)
def test_bad_capacity_parameters_are_field_errors(params, field):
    with pytest.raises(ValidationError) as caught:
        registry.get("aws.asg.set_capacity").validate(params)

    assert field in caught.value.detail


def test_an_unknown_group_is_an_error_naming_it(moto):
    action = registry.get("aws.asg.set_capacity")

    with pytest.raises(aws.ActionError, match="'nope' not found"):
        action.observe(action.validate({"group": "nope", "desired": 1}))


def test_rebooting_an_instance_keeps_it_running_with_checks_ok(moto, tmp_path):
    instance_id = _boto("ec2").run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    action = registry.get("aws.ec2.reboot")
    params = action.validate({"instance_id": instance_id})

    state = action.snapshot(params, tmp_path)
    result = action.execute(params)

    assert state["state"] == "running"
    assert result == {"instance_id": instance_id, "rebooted": True}
    assert _verify(action, params, state) == {"state": (True, "running"), "checks_ok": (True, True)}
    assert not action.reversible


def test_a_stopped_instance_is_not_rebooted(moto):
    ec2 = _boto("ec2")
    instance_id = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance_id])
    action = registry.get("aws.ec2.reboot")

    with pytest.raises(ActionRefused, match="is stopped, not running"):
        action.execute(action.validate({"instance_id": instance_id}))


def test_rebooting_a_db_instance_leaves_it_available(moto, tmp_path):
    _boto("rds").create_db_instance(
        DBInstanceIdentifier="orders-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="admin",
        MasterUserPassword="secret-password",
        AllocatedStorage=20,
    )
    action = registry.get("aws.rds.reboot")
    params = action.validate({"db_instance": "orders-db"})

    action.snapshot(params, tmp_path)
    action.execute(params)

    assert _verify(action, params, {}) == {"status": (True, "available")}
    with pytest.raises(ActionRefused, match="needs a Multi-AZ instance"):
        action.execute(action.validate({"db_instance": "orders-db", "force_failover": True}))


def test_without_credentials_the_family_is_unavailable_with_the_reason(moto, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    action = registry.get("aws.asg.set_capacity")

    with pytest.raises(NotConfigured, match="aws: no credentials found") as caught:
        action.execute(action.validate({"group": "web", "desired": 1}))

    assert isinstance(caught.value, ActionUnavailable)


def test_an_unreachable_endpoint_makes_the_family_unavailable(moto, settings):
    settings.GRACE_AWS_ENDPOINT_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    settings.GRACE_AWS_MAX_ATTEMPTS = 1
    action = registry.get("aws.rds.reboot")

    with pytest.raises(ActionUnavailable, match="aws: cannot reach the endpoint"):
        action.observe(action.validate({"db_instance": "orders-db"}))


def test_a_named_account_uses_its_profile_region_and_credentials(moto, monkeypatch, settings, tmp_path):
    (tmp_path / "config").write_text("[profile ops-west]\nregion = us-west-2\n")
    (tmp_path / "credentials").write_text("[ops-west]\naws_access_key_id = west\naws_secret_access_key = west\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    settings.GRACE_AWS_ACCOUNTS = {"west": "ops-west"}
    west = {"account": "west"}
    template = {"ImageId": AMI, "InstanceType": "t3.micro"}
    aws.client("ec2", west).create_launch_template(LaunchTemplateName="api", LaunchTemplateData=template)
    aws.client("autoscaling", west).create_auto_scaling_group(
        AutoScalingGroupName="api",
        LaunchTemplate={"LaunchTemplateName": "api"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        AvailabilityZones=["us-west-2a"],
    )
    action = registry.get("aws.asg.set_capacity")

    action.execute(action.validate({"group": "api", "desired": 1, "account": "west"}))

    assert aws.client("autoscaling", west).meta.region_name == "us-west-2"
    assert action.observe(action.validate({"group": "api", "desired": 1, "account": "west"}))["desired_capacity"] == 1
    with pytest.raises(aws.ActionError, match="'api' not found"):  # not in the default region
        action.observe(action.validate({"group": "api", "desired": 1}))
    with pytest.raises(ValidationError) as caught:
        action.validate({"group": "api", "desired": 1, "account": "east"})
    assert "account" in caught.value.detail
