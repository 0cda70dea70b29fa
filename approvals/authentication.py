"""``Authorization: Token <key>``: a user's API token (digest looked up), wrong keys limited per client address."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from approvals import tokens
from grace_site import auth_limits


class ApiTokenAuthentication(BaseAuthentication):
    keyword = "Token"
    limit_name = "api-token"  # what lockouts of wrong keys are counted and audited under

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # no token offered: another authentication may apply
        if len(header) != 2:
            raise AuthenticationFailed("Invalid token header: give 'Token <key>'.")
        with auth_limits.guarded(request, channel=self.limit_name):
            user = tokens.authenticate(header[1].decode("utf-8", errors="replace"))
            if user is None:
                raise AuthenticationFailed("Invalid or revoked token.")
        return user, None

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'A user\'s API token: "Token gra_..." (manage.py grace_token create <user>).',
        }
