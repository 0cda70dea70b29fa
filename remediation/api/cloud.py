"""`GET /api/cloud/status/`: which cloud families GRACE can use right now, and as whom."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from grace_site import api
from remediation import cloud_status


class LastErrorSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    error = serializers.CharField()


class FamilyStatusSerializer(serializers.Serializer):
    family = serializers.ChoiceField(choices=sorted(cloud_status.FAMILIES))
    status = serializers.ChoiceField(choices=["available", "unavailable"])
    configured = serializers.BooleanField(help_text="Credentials, engine address or kubeconfig are set.")
    reachable = serializers.BooleanField()
    identity = serializers.DictField(
        help_text="AWS account and ARN, Docker engine version, or Kubernetes server version."
    )
    reason = serializers.CharField(help_text="Why the family is unavailable (empty when available).")
    last_error = LastErrorSerializer(allow_null=True, help_text="The last error a cloud action of this family met.")
    ms = serializers.FloatField(help_text="How long the probe took.")


CloudStatusSerializer = inline_serializer(
    "CloudStatus",
    {
        "families": serializers.DictField(child=FamilyStatusSerializer()),
        "available": serializers.ListField(child=serializers.CharField()),
        "unavailable": serializers.ListField(child=serializers.CharField()),
    },
)


@extend_schema(
    summary="Status of the AWS, Docker and Kubernetes families (probed concurrently, never hangs)",
    parameters=[
        OpenApiParameter("family", str, enum=sorted(cloud_status.FAMILIES), description="Probe only this family.")
    ],
    responses={200: CloudStatusSerializer},
)
@api_view(["GET"])
@permission_classes([api.requires("remediation.view_healrun")])
def cloud_status_view(request):
    family = request.query_params.get("family")
    if family is None:
        return Response(cloud_status.all_status())
    if family not in cloud_status.FAMILIES:
        raise ValidationError({"family": [f"must be one of {', '.join(sorted(cloud_status.FAMILIES))}"]})
    report = cloud_status.family_status(family)
    available = report["status"] == "available"
    return Response(
        {
            "families": {family: report},
            "available": [family] if available else [],
            "unavailable": [] if available else [family],
        }
    )
