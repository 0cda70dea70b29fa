"""A monitored app's URLs for the capture tests: GRACE's own URLs plus views that fail."""

import logging

from django.http import HttpResponse
from django.urls import include, path


class PaymentDeclined(Exception):
    pass


def charge(order_id: str) -> None:
    raise PaymentDeclined(f"card declined for order {order_id}")


def checkout(request, order_id: str):
    charge(order_id)
    return HttpResponse("never")


def log_error(request, order_id: str):
    logging.getLogger("shop.payments").error("payment for order %s failed", order_id)
    return HttpResponse("logged")


urlpatterns = [
    path("checkout/<str:order_id>/", checkout),
    path("log/<str:order_id>/", log_error),
    path("", include("grace_site.urls")),
]
