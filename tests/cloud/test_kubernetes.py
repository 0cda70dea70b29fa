"""Kubernetes executors through the official client against the stand-in API server."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import ValidationError

import remediation.actions.kubernetes as kube
from remediation import contracts
from remediation.actions.base import ActionRefused, ActionUnavailable, registry
from remediation.cloud_status import NotConfigured

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _check(action, params, state, contract=None, **overrides):
    predicates = [{**p, **overrides} if "within" in p else p for p in (contract or action.default_contract)]
    results = contracts.verify(predicates, lambda: action.observe(params), params, state)
    return {r.field: (r.passed, r.actual) for r in results}


def test_rollout_restart_stamps_the_template_and_waits_for_every_replica(k8s, tmp_path):
    k8s.add_deployment("shop", "api", replicas=3)
    before = {p["metadata"]["name"] for p in k8s.cluster.pods_of("shop", "api")}
    action = registry.get("k8s.deployment.rollout_restart")
    params = action.validate({"namespace": "shop", "deployment": "api"})

    state = action.snapshot(params, tmp_path)
    result = action.execute(params)
    right_after = action.observe(params)
    verdict = _check(action, params, state, within=10)

    assert state == {"replicas": 3, "restarted_at": None, "generation": 1}
    assert (
        k8s.deployment("shop", "api")["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        == (result["restarted_at"])
    )
    assert right_after["generation"] == 2
    assert right_after["generation_caught_up"] is False  # the controller had not observed it yet
    assert verdict == {
        "restarted_at": (True, result["restarted_at"]),
        "rollout_complete": (True, True),
        "ready_replicas": (True, 3),
    }
    after = {p["metadata"]["name"] for p in k8s.cluster.pods_of("shop", "api")}
    assert len(after) == 3 and not after & before  # every pod was replaced


def test_a_failing_rollout_fails_the_contract_and_rollback_restores_the_template(k8s, tmp_path):
    k8s.add_deployment("shop", "api", replicas=2)
    original = k8s.deployment("shop", "api")["spec"]["template"]
    k8s.fail_rollouts = True
    action = registry.get("k8s.deployment.rollout_restart")
    params = action.validate({"namespace": "shop", "deployment": "api"})
    state = action.snapshot(params, tmp_path)
    action.execute(params)

    verdict = _check(action, params, state, within=1.5)

    assert verdict["rollout_complete"] == (False, False)

    action.rollback(params, state, tmp_path)
    restored = _check(
        action,
        params,
        state,
        contract=[
            {"field": "restarted_at", "op": "exists", "value": False},  # the stamp is gone again
            {"field": "rollout_complete", "op": "==", "value": True, "within": 10},
            {"field": "ready_replicas", "op": "==", "value": "{snapshot.replicas}", "within": 10},
        ],
    )

    assert all(passed for passed, _ in restored.values()), restored
    assert k8s.deployment("shop", "api")["spec"]["template"] == original


def test_scaling_with_a_failing_controller_fails_the_contract_and_rollback_restores_the_replicas(k8s, tmp_path):
    k8s.add_deployment("shop", "api", replicas=2)
    k8s.fail_rollouts = True
    action = registry.get("k8s.deployment.scale")
    params = action.validate({"namespace": "shop", "deployment": "api", "replicas": 4})
    state = action.snapshot(params, tmp_path)
    result = action.execute(params)

    verdict = _check(action, params, state, within=1.5)

    assert result == {"previous": 2, "replicas": 4}
    assert verdict["replicas"] == (True, 4)
    assert verdict["ready_replicas"] == (False, 2)

    action.rollback(params, state, tmp_path)

    restored = _check(
        action,
        params,
        state,
        contract=[
            {"field": "rollout_complete", "op": "==", "value": True, "within": 10},
            {"field": "ready_replicas", "op": "==", "value": "{snapshot.replicas}", "within": 10},
        ],
    )
    assert restored == {"rollout_complete": (True, True), "ready_replicas": (True, 2)}
    assert k8s.deployment("shop", "api")["spec"]["replicas"] == 2


def test_scaling_a_healthy_deployment_meets_its_contract(k8s, tmp_path):
    k8s.add_deployment("shop", "api", replicas=1)
    action = registry.get("k8s.deployment.scale")
    params = action.validate({"namespace": "shop", "deployment": "api", "replicas": 3})
    state = action.snapshot(params, tmp_path)

    action.execute(params)

    assert _check(action, params, state, within=10) == {
        "replicas": (True, 3),
        "ready_replicas": (True, 3),
        "rollout_complete": (True, True),
    }


def test_a_crash_looping_pod_is_deleted_and_replaced(k8s, tmp_path):
    k8s.add_deployment("shop", "api", replicas=2, crashloop=1)
    looping = k8s.cluster.pods_of("shop", "api")[0]["metadata"]["name"]
    action = registry.get("k8s.pod.delete")
    params = action.validate({"namespace": "shop", "deployment": "api", "pod": looping, "grace_period_seconds": 0})
    state = action.snapshot(params, tmp_path)

    assert action.observe(params)["crash_looping"] is True
    assert action.execute(params)["deleted"] is True
    assert _check(action, params, state) == {"uid": (True, None)}
    restart = registry.get("k8s.deployment.rollout_restart")
    deployment = restart.validate({"namespace": "shop", "deployment": "api"})
    assert _check(
        restart, deployment, {}, contract=[{"field": "all_ready", "op": "==", "value": True, "within": 10}]
    ) == {"all_ready": (True, True)}


def test_a_healthy_pod_is_not_deleted(k8s):
    k8s.add_deployment("shop", "api", replicas=1)
    pod = k8s.cluster.pods_of("shop", "api")[0]["metadata"]["name"]
    action = registry.get("k8s.pod.delete")

    with pytest.raises(ActionRefused, match="is not crash-looping"):
        action.execute(action.validate({"namespace": "shop", "deployment": "api", "pod": pod}))

    assert action.observe(action.validate({"namespace": "shop", "deployment": "api", "pod": pod}))["exists"] is True


def test_a_pod_of_another_deployment_is_never_deleted(k8s):
    """A label may name the pod, but only one the step's (inventory) deployment selects."""
    k8s.add_deployment("shop", "api", replicas=1)
    k8s.add_deployment("shop", "payments", replicas=1, crashloop=1)
    victim = k8s.cluster.pods_of("shop", "payments")[0]["metadata"]["name"]
    action = registry.get("k8s.pod.delete")
    params = action.validate({"namespace": "shop", "deployment": "api", "pod": victim})

    with pytest.raises(ActionRefused, match="is not selected by deployment shop/api"):
        action.execute(params)

    assert victim in {p["metadata"]["name"] for p in k8s.cluster.pods_of("shop", "payments")}


def test_restart_if_needed_skips_a_deployment_whose_replicas_are_all_ready(k8s):
    k8s.add_deployment("shop", "api", replicas=2)
    action = registry.get("k8s.deployment.rollout_restart")
    params = action.validate({"namespace": "shop", "deployment": "api", "skip_if_ready": True})

    result = action.execute(params)

    assert result["skipped"] is True
    assert k8s.deployment("shop", "api")["metadata"]["generation"] == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"namespace": "Shop", "deployment": "api", "replicas": 1}, "namespace"),
        ({"namespace": "shop", "deployment": "api_1", "replicas": 1}, "deployment"),
        ({"namespace": "shop", "deployment": "api", "replicas": -1}, "replicas"),
    ],
)
def test_bad_kubernetes_parameters_are_field_errors(params, field):
    with pytest.raises(ValidationError) as caught:
        registry.get("k8s.deployment.scale").validate(params)

    assert field in caught.value.detail


def test_without_a_kubeconfig_the_family_is_not_configured(settings, tmp_path):
    settings.GRACE_KUBE_IN_CLUSTER = False
    settings.GRACE_KUBECONFIG = str(tmp_path / "missing")
    action = registry.get("k8s.deployment.scale")

    with pytest.raises(NotConfigured, match="kubernetes: no kubeconfig at"):
        action.observe(action.validate({"namespace": "shop", "deployment": "api", "replicas": 1}))


def test_a_rejected_token_makes_the_family_unavailable(k8s, settings, tmp_path):
    settings.GRACE_KUBECONFIG = str(k8s.write_kubeconfig(tmp_path / "bad", token="wrong"))
    action = registry.get("k8s.deployment.scale")

    with pytest.raises(ActionUnavailable, match="401"):
        action.observe(action.validate({"namespace": "shop", "deployment": "api", "replicas": 1}))


def test_an_unreachable_api_server_makes_the_family_unavailable(k8s, settings, tmp_path):
    k8s.url = "http://127.0.0.1:9"
    settings.GRACE_KUBECONFIG = str(k8s.write_kubeconfig(tmp_path / "gone"))

    with pytest.raises(ActionUnavailable, match="cannot reach the API server"):
        kube.probe(0.5)
