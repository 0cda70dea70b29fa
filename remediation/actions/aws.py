"""AWS executors through boto3: Auto Scaling capacity, EC2 reboot, RDS reboot.

Credentials come from boto3's standard chain (environment, shared files, SSO,
instance or task role), optionally through ``GRACE_AWS_PROFILE``; the region
from the step's ``region`` parameter, ``GRACE_AWS_REGION`` or the profile.
``GRACE_AWS_ENDPOINT_URL`` points every client at a compatible endpoint (moto,
LocalStack, a VPC endpoint). Every client has connect/read timeouts and
botocore's "standard" retry mode; what is left after those retries is
classified: throttling and server errors are transient, missing credentials or
a rejected identity make the family unavailable, the rest fails the step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from django.conf import settings
from rest_framework import serializers

from remediation.actions.base import (
    Action,
    ActionError,
    ActionRefused,
    ActionUnavailable,
    TransientActionError,
    registry,
)
from remediation.cloud_status import NotConfigured, note_error

FAMILY = "aws"

# Error codes left after botocore's own retries, by what they mean for the run.
TRANSIENT_CODES = frozenset(
    "Throttling ThrottlingException ThrottledException RequestLimitExceeded RequestThrottled TooManyRequestsException"
    " ServiceUnavailable Unavailable InternalError InternalFailure RequestTimeout RequestTimeoutException"
    " PriorRequestNotComplete ScalingActivityInProgress ResourceContention".split()
)
UNAVAILABLE_CODES = frozenset(
    "AccessDenied AccessDeniedException UnauthorizedOperation AuthFailure InvalidClientTokenId SignatureDoesNotMatch"
    " ExpiredToken ExpiredTokenException UnrecognizedClientException InvalidAccessKeyId MissingAuthenticationToken"
    " OptInRequired".split()
)
REFUSED_CODES = frozenset({"InvalidDBInstanceState", "IncorrectInstanceState", "IncorrectState", "ValidationError"})


def _note(message: str) -> None:
    note_error(FAMILY, message)


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Translate boto3 errors into the action error classes, naming what was being done."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        message = f"aws: {what}: {code}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in UNAVAILABLE_CODES:
            _note(message)
            raise ActionUnavailable(message) from exc
        if code in TRANSIENT_CODES or status >= 500:
            _note(message)
            raise TransientActionError(message) from exc
        if code in REFUSED_CODES:
            raise ActionRefused(message) from exc
        raise ActionError(message) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        message = f"aws: no credentials found ({exc}); set them in the environment, a profile or an instance role"
        raise NotConfigured(message) from exc
    except EndpointConnectionError as exc:
        message = f"aws: cannot reach the endpoint ({exc})"
        _note(message)
        raise ActionUnavailable(message) from exc
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        message = f"aws: {what}: timed out ({exc})"
        _note(message)
        raise TransientActionError(message) from exc
    except BotoCoreError as exc:
        message = f"aws: {what}: {exc}"
        _note(message)
        raise ActionError(message) from exc


def session(account: str = "") -> boto3.Session:
    """A session from the standard chain, GRACE_AWS_PROFILE, or the profile of a named account."""
    if account:
        try:
            profile = settings.GRACE_AWS_ACCOUNTS[account]
        except KeyError:
            raise NotConfigured(f"aws: no account named {account!r} in GRACE_AWS_ACCOUNTS") from None
    else:
        profile = settings.GRACE_AWS_PROFILE
    try:
        return boto3.Session(profile_name=profile or None)
    except ProfileNotFound as exc:
        raise NotConfigured(f"aws: {exc} ({'GRACE_AWS_ACCOUNTS' if account else 'GRACE_AWS_PROFILE'})") from exc


def client(
    service: str,
    params: dict | None = None,
    *,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_attempts: int | None = None,
) -> Any:
    """A boto3 client for a step's ``account``/``region`` (or the defaults) with GRACE's endpoint,
    timeouts and retry policy; NotConfigured without region or credentials."""
    params = params or {}
    sess = session(params.get("account", ""))
    region = params.get("region") or (
        sess.region_name if params.get("account") else settings.GRACE_AWS_REGION or sess.region_name
    )
    if not region:
        raise NotConfigured("aws: no region configured (set GRACE_AWS_REGION, AWS_DEFAULT_REGION or a profile region)")
    if sess.get_credentials() is None:
        raise NotConfigured(
            "aws: no credentials found (environment, shared credentials file, profile or instance role)"
        )
    config = Config(
        region_name=region,
        connect_timeout=connect_timeout or settings.GRACE_AWS_CONNECT_TIMEOUT,
        read_timeout=read_timeout or settings.GRACE_AWS_READ_TIMEOUT,
        retries={"mode": "standard", "max_attempts": max_attempts or settings.GRACE_AWS_MAX_ATTEMPTS},
    )
    try:
        return sess.client(service, endpoint_url=settings.GRACE_AWS_ENDPOINT_URL or None, config=config)
    except NoRegionError as exc:
        raise NotConfigured(f"aws: {exc}") from exc


def probe(timeout: float) -> dict:
    """The caller's identity (account id, ARN), within ``timeout`` seconds."""
    sts = client("sts", connect_timeout=timeout, read_timeout=timeout, max_attempts=1)
    with aws_errors("sts get-caller-identity"):
        identity = sts.get_caller_identity()
    return {
        "account": identity.get("Account", ""),
        "arn": identity.get("Arn", ""),
        "region": sts.meta.region_name,
        "endpoint": settings.GRACE_AWS_ENDPOINT_URL or "",
    }


# Every AWS action acts on an inventory resource: its account and region come from it too.
SCOPE_BINDS = {"account": "scope.account", "region": "scope.region"}


class _RegionParams(serializers.Serializer):
    region = serializers.RegexField(r"^[a-z]{2}(-[a-z]+)+-\d$", required=False, allow_blank=True, default="")
    account = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default="", help_text="A name from GRACE_AWS_ACCOUNTS."
    )

    def validate_account(self, value: str) -> str:
        if value and value not in settings.GRACE_AWS_ACCOUNTS:
            raise serializers.ValidationError(f"no account named {value!r} in GRACE_AWS_ACCOUNTS")
        return value


# --- aws.asg.set_capacity ----------------------------------------------------------------------


class AsgCapacityParams(_RegionParams):
    group = serializers.CharField(max_length=255)
    desired = serializers.IntegerField(min_value=0, max_value=10000, required=False)
    increment = serializers.IntegerField(min_value=-10000, max_value=10000, required=False)
    honor_cooldown = serializers.BooleanField(default=False)

    def validate(self, attrs: dict) -> dict:
        if ("desired" in attrs) == ("increment" in attrs):
            raise serializers.ValidationError({"desired": ["give exactly one of desired or increment"]})
        if attrs.get("increment") == 0:
            raise serializers.ValidationError({"increment": ["must not be zero"]})
        return attrs


def _group(params: dict) -> tuple[Any, dict]:
    asg = client("autoscaling", params)
    with aws_errors(f"describe auto scaling group {params['group']}"):
        groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[params["group"]])["AutoScalingGroups"]
    if not groups:
        raise ActionError(f"aws: auto scaling group {params['group']!r} not found")
    return asg, groups[0]


def _target_capacity(params: dict, group: dict) -> int:
    if "desired" in params and params["desired"] is not None:
        return int(params["desired"])
    return int(group["DesiredCapacity"]) + int(params["increment"])


def _check_bounds(target: int, group: dict) -> None:
    low, high = int(group["MinSize"]), int(group["MaxSize"])
    if not low <= target <= high:
        raise ActionRefused(
            f"aws: desired capacity {target} is outside {group['AutoScalingGroupName']}'s min..max ({low}..{high})"
        )


def asg_observe(params: dict) -> dict:
    _, group = _group(params)
    instances = group.get("Instances", [])
    return {
        "desired_capacity": group["DesiredCapacity"],
        "min_size": group["MinSize"],
        "max_size": group["MaxSize"],
        "instances": len(instances),
        "in_service": sum(
            1 for i in instances if i.get("LifecycleState") == "InService" and i.get("HealthStatus") == "Healthy"
        ),
    }


def asg_snapshot(params: dict, directory: Path) -> dict:
    _, group = _group(params)
    target = _target_capacity(params, group)
    return {
        "desired_capacity": group["DesiredCapacity"],
        "min_size": group["MinSize"],
        "max_size": group["MaxSize"],
        "target": target,
    }


def _set_capacity(asg: Any, group: dict, target: int, honor_cooldown: bool) -> None:
    _check_bounds(target, group)
    name = group["AutoScalingGroupName"]
    with aws_errors(f"set desired capacity of {name} to {target}"):
        asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=target, HonorCooldown=honor_cooldown)


def asg_execute(params: dict) -> dict:
    asg, group = _group(params)
    target = _target_capacity(params, group)
    _set_capacity(asg, group, target, params.get("honor_cooldown", False))
    return {"group": params["group"], "previous": group["DesiredCapacity"], "desired": target}


def asg_rollback(params: dict, state: dict, directory: Path) -> dict:
    asg, group = _group(params)
    target = int(state["desired_capacity"])
    _set_capacity(asg, group, target, False)
    return {"group": params["group"], "previous": group["DesiredCapacity"], "desired": target}


registry.register(
    Action(
        name="aws.asg.set_capacity",
        family=FAMILY,
        params=AsgCapacityParams,
        observe=asg_observe,
        snapshot=asg_snapshot,
        execute=asg_execute,
        rollback=asg_rollback,
        tier=2,
        # With "increment" a blind re-run would add capacity twice: re-observe instead.
        idempotent=False,
        timeout=60,
        target_param="group",
        scope_params=("account", "region"),
        resource_kind="aws_asg",
        binds={"group": "target", **SCOPE_BINDS},
        description="Set an Auto Scaling group's desired capacity (absolute or by increment), within min..max.",
        default_contract=[
            {"field": "desired_capacity", "op": "==", "value": "{snapshot.target}", "within": 300},
            {"field": "in_service", "op": "==", "value": "{snapshot.target}", "within": 300},
        ],
    )
)


# --- aws.ec2.reboot ------------------------------------------------------------------------------


class Ec2RebootParams(_RegionParams):
    instance_id = serializers.RegexField(r"^i-[0-9a-f]{8,17}$")


def ec2_observe(params: dict) -> dict:
    ec2 = client("ec2", params)
    instance_id = params["instance_id"]
    with aws_errors(f"describe instance {instance_id}"):
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        statuses = ec2.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)["InstanceStatuses"]
    instances = [i for r in reservations for i in r.get("Instances", [])]
    if not instances:
        raise ActionError(f"aws: instance {instance_id} not found")
    status = statuses[0] if statuses else {}
    instance_status = status.get("InstanceStatus", {}).get("Status", "not-applicable")
    system_status = status.get("SystemStatus", {}).get("Status", "not-applicable")
    return {
        "state": instances[0]["State"]["Name"],
        "instance_status": instance_status,
        "system_status": system_status,
        "checks_ok": instance_status == "ok" and system_status == "ok",
    }


def ec2_snapshot(params: dict, directory: Path) -> dict:
    return ec2_observe(params)


def ec2_execute(params: dict) -> dict:
    facts = ec2_observe(params)
    if facts["state"] != "running":
        raise ActionRefused(f"aws: instance {params['instance_id']} is {facts['state']}, not running: not rebooting it")
    ec2 = client("ec2", params)
    with aws_errors(f"reboot instance {params['instance_id']}"):
        ec2.reboot_instances(InstanceIds=[params["instance_id"]])
    return {"instance_id": params["instance_id"], "rebooted": True}


registry.register(
    Action(
        name="aws.ec2.reboot",
        family=FAMILY,
        params=Ec2RebootParams,
        observe=ec2_observe,
        snapshot=ec2_snapshot,
        execute=ec2_execute,
        tier=2,
        idempotent=False,
        timeout=60,
        target_param="instance_id",
        scope_params=("account", "region"),
        resource_kind="aws_ec2",
        binds={"instance_id": "target", **SCOPE_BINDS},
        description="Reboot a running EC2 instance; it must come back running with both status checks ok.",
        default_contract=[
            {"field": "state", "op": "==", "value": "running", "within": 600},
            {"field": "checks_ok", "op": "==", "value": True, "within": 600},
        ],
    )
)


# --- aws.rds.reboot -----------------------------------------------------------------------------


class RdsRebootParams(_RegionParams):
    db_instance = serializers.RegexField(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
    force_failover = serializers.BooleanField(default=False)


def _db_instance(params: dict) -> dict:
    rds = client("rds", params)
    with aws_errors(f"describe DB instance {params['db_instance']}"):
        found = rds.describe_db_instances(DBInstanceIdentifier=params["db_instance"])["DBInstances"]
    if not found:
        raise ActionError(f"aws: DB instance {params['db_instance']!r} not found")
    return found[0]


def rds_observe(params: dict) -> dict:
    db = _db_instance(params)
    return {
        "status": db.get("DBInstanceStatus", ""),
        "multi_az": bool(db.get("MultiAZ")),
        "engine": db.get("Engine", ""),
        "endpoint": (db.get("Endpoint") or {}).get("Address", ""),
    }


def rds_snapshot(params: dict, directory: Path) -> dict:
    return rds_observe(params)


def rds_execute(params: dict) -> dict:
    db = _db_instance(params)
    if params.get("force_failover") and not db.get("MultiAZ"):
        raise ActionRefused(f"aws: force_failover needs a Multi-AZ instance; {params['db_instance']} is single-AZ")
    rds = client("rds", params)
    kwargs: dict[str, Any] = {"DBInstanceIdentifier": params["db_instance"]}
    if params.get("force_failover"):
        kwargs["ForceFailover"] = True
    with aws_errors(f"reboot DB instance {params['db_instance']}"):
        status = rds.reboot_db_instance(**kwargs)["DBInstance"].get("DBInstanceStatus", "")
    return {"db_instance": params["db_instance"], "status": status}


registry.register(
    Action(
        name="aws.rds.reboot",
        family=FAMILY,
        params=RdsRebootParams,
        observe=rds_observe,
        snapshot=rds_snapshot,
        execute=rds_execute,
        tier=3,
        idempotent=False,
        timeout=60,
        target_param="db_instance",
        scope_params=("account", "region"),
        resource_kind="aws_rds",
        binds={"db_instance": "target", **SCOPE_BINDS},
        description="Reboot an RDS instance (optionally with a Multi-AZ failover); it must be available again.",
        default_contract=[{"field": "status", "op": "==", "value": "available", "within": 900}],
    )
)
