# URL patterns of the cloud family status endpoint (GET /api/cloud/status/).
urlpatterns: list = []
