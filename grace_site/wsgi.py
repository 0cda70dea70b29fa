import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")
application = get_wsgi_application()


def _mount_fronts(app):
    """Apps mounted in front of Django (settings.GRACE_WSGI_FRONTS, named as strings: grace_site imports no
    app). Each takes the requests it serves and hands the rest to the app behind it."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    for front in settings.GRACE_WSGI_FRONTS:
        app = import_string(front)(app)
    return app


application = _mount_fronts(application)
