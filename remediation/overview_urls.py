"""The admin's home: the operator's overview (included before the admin's own URLs in grace_site/urls.py)."""

from django.contrib import admin
from django.urls import path

from remediation.admin_overview import overview_view

urlpatterns = [path("", admin.site.admin_view(overview_view), name="grace-overview")]
