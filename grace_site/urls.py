from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from grace_site.health import health

handler404 = "grace_site.api.page_not_found"
handler500 = "grace_site.api.server_error"

admin.site.site_header = "GRACE administration"
admin.site.site_title = "GRACE"
admin.site.index_title = "Operations"
# The overview is the admin's home and what "View site" opens; its header links replace the side bar, so lists
# keep the whole width of the window.
admin.site.site_url = "/admin/"
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # Before the admin's own URLs: the overview answers /admin/ (admin:index), everything else is the admin's.
    path("admin/", include("remediation.overview_urls")),
    path("admin/", admin.site.urls),
    path("api/health/", health, name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("approvals.api.urls")),
    path("api/", include("incidents.api.urls")),
    path("api/", include("remediation.api.urls")),
    path("api/", include("learning.api.urls")),
]
