"""GRACE settings. Every value comes from the environment (see README)."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .env import (
    env_bool,
    env_bytes,
    env_database,
    env_float,
    env_int,
    env_list,
    env_map,
    env_ports,
    env_str,
    env_url,
    parse_ed25519_private_key,
    read_ed25519_key_file,
)
from .redis import celery_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GRACE_VAR_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key is not None:
        if len(key) < 32:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 32 characters long")
        return key
    # Generated once and kept beside the data, never a key in the code.
    path = VAR_DIR / "secret_key"
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
GRACE_PORT = env_int("GRACE_PORT", 8000, minimum=1, maximum=65535)
GRACE_WEBHOOK_TOKEN = env_str("GRACE_WEBHOOK_TOKEN", "")
if GRACE_WEBHOOK_TOKEN and len(GRACE_WEBHOOK_TOKEN) < 16:
    raise ImproperlyConfigured("GRACE_WEBHOOK_TOKEN must be at least 16 characters long (or unset to refuse webhooks)")
REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "grace_site",  # project-level commands (grace_setup); no models
    "approvals",
    "incidents",
    "remediation",
    "learning",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "grace_site.decoding.DeclaredBodyLimit",  # an API body declared over the limit: 413 before it is read
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: answers a locked-out admin login with the lockout page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out login before the password is checked
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "grace_site.urls"
WSGI_APPLICATION = "grace_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", str(VAR_DIR / "grace.sqlite3"))}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Tests run against a real SQLite file (workers in other processes share it).
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_grace.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("GRACE_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Admin and Swagger UI assets are served by the app itself (no CDN, no extra server).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# Behind a TLS-terminating proxy set GRACE_SECURE_COOKIES=true.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("GRACE_SECURE_COOKIES", False)
CSRF_TRUSTED_ORIGINS = env_list("GRACE_CSRF_TRUSTED_ORIGINS", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Credentials in log records (URL passwords, tokens, webhook paths) are masked on every handler.
    "filters": {"redact": {"()": "grace_site.masking.RedactingFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env_str("GRACE_LOG_LEVEL", "INFO")},
}

# Where audited admin changes are written (grace_site names GRACE's apps only as strings).
GRACE_AUDIT_RECORDER = "approvals.audit.record"

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous API call then gets 401 with WWW-Authenticate, not 403.
        "approvals.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "grace_site.api.Pagination",  # limit/offset, limit at most 1000
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "grace_site.openapi.AutoSchema",
    # One decoding path for every JSON body (grace_site/decoding.py); nothing else is parsed.
    "DEFAULT_PARSER_CLASSES": ["grace_site.decoding.JSONParser"],
    "EXCEPTION_HANDLER": "grace_site.api.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_CLASSES": ["grace_site.throttling.AnonThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("GRACE_ANON_THROTTLE", "120/minute"),
        "health": env_str("GRACE_HEALTH_THROTTLE", "1200/minute"),
    },
}

# --- Brute force: failed logins and wrong tokens ------------------------------
# Behind N reverse proxies the client address is the N-th entry from the right of X-Forwarded-For.
GRACE_TRUSTED_PROXIES = env_int("GRACE_TRUSTED_PROXIES", 0, minimum=0, maximum=10)
# Wrong API and webhook tokens, per client address (and per account when the credential names one).
GRACE_AUTH_FAILURE_LIMIT = env_str("GRACE_AUTH_FAILURE_LIMIT", "20 per 10 minutes")
try:
    from limits import parse as _parse_auth_limit

    _parse_auth_limit(GRACE_AUTH_FAILURE_LIMIT)
except ValueError:
    raise ImproperlyConfigured(
        f"GRACE_AUTH_FAILURE_LIMIT must look like '20 per 10 minutes' or '5/minute', got {GRACE_AUTH_FAILURE_LIMIT!r}"
    ) from None
# The admin login (django-axes): this many failures from one address, or for one user name, lock it
# for the cool-off; every attempt during it (the right password too) restarts the cool-off.
AXES_FAILURE_LIMIT = env_int("GRACE_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("GRACE_LOGIN_COOLOFF_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # each one on its own
AXES_HANDLER = "grace_site.auth_limits.AxesHandler"  # on Redis, keys expiring with the cool-off
AXES_CACHE = "default"
AXES_CLIENT_IP_CALLABLE = "grace_site.auth_limits.client_address"
AXES_LOCKOUT_CALLABLE = "grace_site.auth_limits.admin_lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ADMIN = False  # attempts live in Redis, not in axes' tables
AXES_DISABLE_ACCESS_LOG = True
# Request bodies: bigger ones get 413; deeper nesting and longer object keys get 400 naming the field.
# GRACE_INTAKE_MAX_BODY_BYTES is the former name of GRACE_API_MAX_BODY_BYTES, still read.
GRACE_API_MAX_BODY_BYTES = env_int(
    "GRACE_API_MAX_BODY_BYTES", env_int("GRACE_INTAKE_MAX_BODY_BYTES", 1024 * 1024, minimum=1024), minimum=1024
)
GRACE_INTAKE_MAX_BODY_BYTES = GRACE_API_MAX_BODY_BYTES  # the former name, for code that still reads it
# Django's own cap on a body it reads, never below the API's: a body the API accepts is never Django's 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, GRACE_API_MAX_BODY_BYTES)
GRACE_API_MAX_JSON_DEPTH = env_int("GRACE_API_MAX_JSON_DEPTH", 32, minimum=4, maximum=500)
GRACE_API_MAX_KEY_LENGTH = env_int("GRACE_API_MAX_KEY_LENGTH", 256, minimum=16)

SPECTACULAR_SETTINGS = {
    "TITLE": "GRACE API",
    "DESCRIPTION": "Self-healing operations: incidents, heal runs, approvals, audit and learning.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],  # the schema and its docs are public
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status": name each set of choices once, explicitly.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "remediation.choices.RunStatus",
        "ActionFamilyEnum": "remediation.choices.Family",
        "AttemptStatusEnum": "remediation.choices.AttemptStatus",
        "IncidentStatusEnum": "incidents.choices.IncidentStatus",
        "ApprovalStatusEnum": "approvals.choices.RequestStatus",
        "DeliveryStatusEnum": "approvals.choices.DeliveryStatus",
        "BenchmarkRunStatusEnum": "learning.choices.BenchmarkRunStatus",
    },
}

# --- Celery ----------------------------------------------------------------
# Time limits per stage; the broker visibility timeout must outlast the longest.
# A stage may poll a contract for up to 15 minutes (an RDS reboot): the limits leave room for that.
GRACE_TASK_SOFT_TIME_LIMIT = env_int("GRACE_TASK_SOFT_TIME_LIMIT", 1200, minimum=1)
GRACE_TASK_TIME_LIMIT = env_int("GRACE_TASK_TIME_LIMIT", 1260, minimum=1)
if GRACE_TASK_TIME_LIMIT <= GRACE_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("GRACE_TASK_TIME_LIMIT must be greater than GRACE_TASK_SOFT_TIME_LIMIT")

CELERY_BROKER_URL = CELERY_RESULT_BACKEND = celery_url(REDIS_URL)
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = GRACE_TASK_SOFT_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = GRACE_TASK_TIME_LIMIT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With Redis down, publishing a task, opening a broker channel (control pings) or subscribing to a result
# gives up after two quick retries, about a second (Celery's defaults wait 6 s for a channel and 19 s for
# the result store): the API answers 503 instead of holding the request, and the reaper re-sends.
_REDIS_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}
CELERY_TASK_PUBLISH_RETRY_POLICY = _REDIS_RETRY
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": GRACE_TASK_TIME_LIMIT * 2,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    **_REDIS_RETRY,
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "retry_policy": _REDIS_RETRY,
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "incidents.sweep*": {"queue": "sweeps"},
    "incidents.consume_deliveries": {"queue": "intake"},
    "incidents.redrive_deliveries": {"queue": "intake"},
    "learning.benchmark*": {"queue": "benchmarks"},
    "remediation.*": {"queue": "heal.local"},
    "*": {"queue": "default"},
}
CELERY_BEAT_SCHEDULER = "grace_site.scheduler:GraceScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Celery's own per-task close of every connection (see grace_site/celery.py): only when
# connections are not meant to persist; otherwise connections are recycled by age and health.
CELERY_DB_REUSE_MAX = 10_000 if DATABASES["default"].get("CONN_MAX_AGE") else None
# Beat entries are synced into django-celery-beat's tables, editable in the admin.
# Each carries an expiry so a backlog after downtime does not fire a storm.
CELERY_BEAT_SCHEDULE: dict = {}

# --- Health ----------------------------------------------------------------
GRACE_HEALTH_WORKER_TIMEOUT = env_float("GRACE_HEALTH_WORKER_TIMEOUT", 1.0, minimum=0.1)
GRACE_HEALTH_BEAT_MAX_AGE = env_int("GRACE_HEALTH_BEAT_MAX_AGE", 60, minimum=1)

# --- incidents: intake, diagnosis, sweeps -----------------------------------
# Intake limits (the body size is GRACE_API_MAX_BODY_BYTES): labels over the caps get 400 naming the label.
GRACE_INTAKE_MAX_ALERTS = env_int("GRACE_INTAKE_MAX_ALERTS", 1000, minimum=1)
GRACE_INTAKE_MAX_LABELS = env_int("GRACE_INTAKE_MAX_LABELS", 64, minimum=1)
GRACE_INTAKE_MAX_LABEL_BYTES = env_int("GRACE_INTAKE_MAX_LABEL_BYTES", 1024, minimum=16)
GRACE_INTAKE_RAW_MAX_BYTES = env_int("GRACE_INTAKE_RAW_MAX_BYTES", 16 * 1024, minimum=256)
# How often each process compares its compiled diagnosis rules with the rule table.
GRACE_DIAGNOSIS_RECHECK_SECONDS = env_float("GRACE_DIAGNOSIS_RECHECK_SECONDS", 1.0, minimum=0.0)
# Durable intake (docs/intake.md): deliveries are stored with one INSERT and acknowledged (202); consumers on
# queue "intake" turn them into incidents in batches.
GRACE_INTAKE_BATCH = env_int("GRACE_INTAKE_BATCH", 500, minimum=1, maximum=5000)
# Consumers woken in parallel when batches come back full. SQLite has one writer, which a second consumer could
# only wait for (doing the same work with more overhead): one there, two on PostgreSQL.
GRACE_INTAKE_CONSUMERS = env_int(
    "GRACE_INTAKE_CONSUMERS", 1 if DATABASES["default"]["ENGINE"].endswith("sqlite3") else 2, minimum=1, maximum=64
)
# A consumer whose batch was not full waits this long before claiming again, so that the deliveries arriving
# meanwhile are applied together (one transaction and hand-off for several, not one each); at most this much
# is added to an alert's way to its incident.
GRACE_INTAKE_LINGER_SECONDS = env_float("GRACE_INTAKE_LINGER_SECONDS", 0.05, minimum=0.0)
# Past this many pending deliveries intake answers 429 with Retry-After (rechecked at most this often).
GRACE_INTAKE_MAX_BACKLOG = env_int("GRACE_INTAKE_MAX_BACKLOG", 100_000, minimum=1)
GRACE_INTAKE_BACKLOG_RECHECK_SECONDS = env_float("GRACE_INTAKE_BACKLOG_RECHECK_SECONDS", 0.5, minimum=0.0)
GRACE_INTAKE_RETRY_AFTER = env_int("GRACE_INTAKE_RETRY_AFTER", 5, minimum=1)
# A delivery whose processing failed this many times is parked with its error (replayable).
GRACE_INTAKE_MAX_ATTEMPTS = env_int("GRACE_INTAKE_MAX_ATTEMPTS", 5, minimum=1, maximum=100)
GRACE_INTAKE_RETRY_SECONDS = env_float("GRACE_INTAKE_RETRY_SECONDS", 2.0, minimum=0.0)
# A consumer holds its batch this long; a batch still held after it was lost with its consumer.
GRACE_INTAKE_LEASE_SECONDS = env_int("GRACE_INTAKE_LEASE_SECONDS", 60, minimum=1)
# A pending delivery no consumer took within this long had its wake-up lost: beat sends one again.
GRACE_INTAKE_REDRIVE_SECONDS = env_int("GRACE_INTAKE_REDRIVE_SECONDS", 5, minimum=1)
# /api/health/ warns when the oldest unprocessed delivery is older than this.
GRACE_INTAKE_MAX_AGE = env_int("GRACE_INTAKE_MAX_AGE", 60, minimum=1)
# Processed deliveries are kept this long (their status stays readable), then removed; parked ones stay.
GRACE_INTAKE_KEEP_HOURS = env_int("GRACE_INTAKE_KEEP_HOURS", 24, minimum=1)
# The light intake path in front of Django (incidents/fastpath.py): channel-token POSTs answered 202 without the
# middleware stack; everything else goes to Django. Off: Django answers every request.
GRACE_INTAKE_FAST_PATH = env_bool("GRACE_INTAKE_FAST_PATH", True)
GRACE_WSGI_FRONTS = ["incidents.fastpath.IntakeApp"] if GRACE_INTAKE_FAST_PATH else []
# Exception capture (see docs/intake.md): empty URL ingests in-process; GRACE_CAPTURE_SELF captures GRACE's own.
GRACE_CAPTURE_URL = env_str("GRACE_CAPTURE_URL", "")
GRACE_CAPTURE_TOKEN = env_str("GRACE_CAPTURE_TOKEN", "")
GRACE_CAPTURE_SERVICE = env_str("GRACE_CAPTURE_SERVICE", "grace")
GRACE_CAPTURE_ENVIRONMENT = env_str("GRACE_CAPTURE_ENVIRONMENT", "production")
GRACE_CAPTURE_QUEUE_SIZE = env_int("GRACE_CAPTURE_QUEUE_SIZE", 1000, minimum=1)
GRACE_CAPTURE_TIMEOUT = env_float("GRACE_CAPTURE_TIMEOUT", 3.0, minimum=0.1)
if env_bool("GRACE_CAPTURE_SELF", False):
    MIDDLEWARE.append("incidents.capture.ExceptionCaptureMiddleware")
    LOGGING["handlers"]["grace_incidents"] = {
        "class": "incidents.capture.IncidentLogHandler",
        "level": "ERROR",
        "filters": ["redact"],
    }
    LOGGING["root"]["handlers"].append("grace_incidents")
# Name the API's incident enums explicitly (other apps also have fields called "status").
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update(
    {
        "IncidentStatusEnum": "incidents.choices.IncidentStatus",
        "AlertStatusEnum": [("firing", "firing"), ("resolved", "resolved")],
    }
)
# Host sweeps (CPU, memory, load, disk of the machines GRACE watches) open an incident only when a check
# breaches in at least K of its last N sweeps, and resolve it once fewer than K of the last N breach.
GRACE_SWEEP_PERSIST_K = env_int("GRACE_SWEEP_PERSIST_K", 3, minimum=1)
GRACE_SWEEP_PERSIST_N = env_int("GRACE_SWEEP_PERSIST_N", 5, minimum=1)
if GRACE_SWEEP_PERSIST_K > GRACE_SWEEP_PERSIST_N:
    raise ImproperlyConfigured("GRACE_SWEEP_PERSIST_K must be at most GRACE_SWEEP_PERSIST_N")
# (end incidents)

# --- remediation: pipeline, local actions, snapshots, resilience -------------
# pipeline
GRACE_SNAPSHOT_DIR = Path(env_str("GRACE_SNAPSHOT_DIR", str(VAR_DIR / "snapshots")))
GRACE_SNAPSHOT_RETENTION_DAYS = env_int("GRACE_SNAPSHOT_RETENTION_DAYS", 14, minimum=1)
# Snapshot storage on each host: held (not yet purged) snapshots of one target, of all targets, and the free
# space a new snapshot must leave on the snapshot disk. Past any of them the snapshot is refused (BLOCKED).
GRACE_SNAPSHOT_TARGET_QUOTA = env_bytes("GRACE_SNAPSHOT_TARGET_QUOTA", "5GiB", minimum=1)
GRACE_SNAPSHOT_TOTAL_QUOTA = env_bytes("GRACE_SNAPSHOT_TOTAL_QUOTA", "20GiB", minimum=1)
GRACE_SNAPSHOT_MIN_FREE = env_bytes("GRACE_SNAPSHOT_MIN_FREE", "1GiB")
# A stage may go this long (plus its steps' timeouts) without progress before the reaper re-dispatches it.
GRACE_STAGE_GRACE_SECONDS = env_int("GRACE_STAGE_GRACE_SECONDS", 60, minimum=1)
GRACE_REAPER_MAX_TRIES = env_int("GRACE_REAPER_MAX_TRIES", 3, minimum=1)
# An open incident with no run after this long had its hand-off lost: the reaper starts its run.
GRACE_HANDOFF_GRACE_SECONDS = env_int("GRACE_HANDOFF_GRACE_SECONDS", 30, minimum=1)
# A stage message that no worker started within this lease is sent again (a started stage is bounded by the
# stage's hard time limit instead).
GRACE_DISPATCH_LEASE_SECONDS = env_int("GRACE_DISPATCH_LEASE_SECONDS", 45, minimum=1)
# How long infrastructure refusals (Redis unreadable for breakers and rate limits) are retried inside a stage.
GRACE_INFRA_RETRY_SECONDS = env_float("GRACE_INFRA_RETRY_SECONDS", 60.0, minimum=0.0)
# fleet: this machine's name; a worker consumes heal.local.<GRACE_HOST> besides its other queues, and acts
# on the inventory resources that live on this host.
GRACE_HOST = env_str("GRACE_HOST", "") or re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63] or "localhost"
if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", GRACE_HOST):
    raise ImproperlyConfigured(f"GRACE_HOST must be a host name (letters, digits, '.', '_', '-'), got {GRACE_HOST!r}")
GRACE_AGENT_HEARTBEAT_SECONDS = env_float("GRACE_AGENT_HEARTBEAT_SECONDS", 5.0, minimum=0.5)
# An agent not heard from for this long is not live: runs for its host wait (BLOCKED_ON_HOST) instead of queueing.
GRACE_AGENT_LIVE_SECONDS = env_float("GRACE_AGENT_LIVE_SECONDS", 20.0, minimum=1.0)
# A run waiting for its host's agent is escalated when none comes back within this long.
GRACE_HOST_WAIT_SECONDS = env_int("GRACE_HOST_WAIT_SECONDS", 1800, minimum=1)
# local actions
# Directories local actions may touch (SQLite files, caches, service configs); nothing outside them.
GRACE_ALLOWED_ROOTS = env_list("GRACE_ALLOWED_ROOTS", [str(VAR_DIR / "managed"), str(VAR_DIR / "demo")])
if not all(os.path.isabs(_root) for _root in GRACE_ALLOWED_ROOTS):
    raise ImproperlyConfigured(f"GRACE_ALLOWED_ROOTS must list absolute directories, got {GRACE_ALLOWED_ROOTS!r}")
GRACE_SQLITE_BUSY_TIMEOUT_MS = env_int("GRACE_SQLITE_BUSY_TIMEOUT_MS", 5000, minimum=0)
# PostgreSQL targets by name: a JSON object {"name": "postgres://..."} or the path of a file holding one.
GRACE_POSTGRES_TARGETS = env_str("GRACE_POSTGRES_TARGETS", "")
GRACE_PG_CONNECT_TIMEOUT = env_int("GRACE_PG_CONNECT_TIMEOUT", 5, minimum=1)
GRACE_PG_STATEMENT_TIMEOUT_MS = env_int("GRACE_PG_STATEMENT_TIMEOUT_MS", 30000, minimum=100)
GRACE_PG_MAINTENANCE_TIMEOUT_MS = env_int("GRACE_PG_MAINTENANCE_TIMEOUT_MS", 600000, minimum=1000)
# Sessions with these application_names are GRACE's own and never terminated or cancelled.
GRACE_PG_APPLICATION_NAME = env_str("GRACE_PG_APPLICATION_NAME", "grace")
GRACE_PG_PROTECTED_APPLICATIONS = env_list("GRACE_PG_PROTECTED_APPLICATIONS", [])
# Services GRACE may restart or reconfigure (JSON file; missing file = none).
GRACE_SERVICES_FILE = Path(env_str("GRACE_SERVICES_FILE", str(VAR_DIR / "services.json")))
# Hosts http.probe may contact: names, "*.domain" (any name under it), IP addresses or networks, or "*".
GRACE_PROBE_ALLOWED_HOSTS = [
    host.lower() for host in env_list("GRACE_PROBE_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "::1"])
]
for _entry in GRACE_PROBE_ALLOWED_HOSTS:
    if _entry != "*" and not re.fullmatch(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*", _entry):
        try:
            ipaddress.ip_network(_entry, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"GRACE_PROBE_ALLOWED_HOSTS: {_entry!r} is not a host name, '*.domain', "
                "an IP address or network, or '*'"
            ) from None
# On loopback (127.0.0.0/8, ::1, localhost, 0.0.0.0) http.probe may reach only these ports: GRACE's own
# web port by default, never Redis or PostgreSQL beside it.
GRACE_PROBE_LOOPBACK_PORTS = env_ports("GRACE_PROBE_LOOPBACK_PORTS", [GRACE_PORT])
# cache.clear keeps what it removes up to this size; above it the step is refused unless it allows no snapshot.
GRACE_CACHE_SNAPSHOT_MAX_BYTES = env_int("GRACE_CACHE_SNAPSHOT_MAX_BYTES", 256 * 1024 * 1024, minimum=0)
# resilience: retries of transient errors, circuit breakers and rate limits per (action, target), state in Redis
GRACE_RETRY_ATTEMPTS = env_int("GRACE_RETRY_ATTEMPTS", 3, minimum=1, maximum=20)
GRACE_RETRY_MAX_SECONDS = env_float("GRACE_RETRY_MAX_SECONDS", 60.0, minimum=0.0)
GRACE_RETRY_WAIT_INITIAL = env_float("GRACE_RETRY_WAIT_INITIAL", 1.0, minimum=0.0)
GRACE_RETRY_WAIT_MAX = env_float("GRACE_RETRY_WAIT_MAX", 20.0, minimum=0.0)
GRACE_BREAKER_FAIL_MAX = env_int("GRACE_BREAKER_FAIL_MAX", 5, minimum=1)
GRACE_BREAKER_RESET_TIMEOUT = env_int("GRACE_BREAKER_RESET_TIMEOUT", 300, minimum=1)
# A breaker unused this long is forgotten (its Redis keys expire); at least the reset timeout.
GRACE_RESILIENCE_STATE_TTL = env_int("GRACE_RESILIENCE_STATE_TTL", 86400, minimum=1)
if GRACE_RESILIENCE_STATE_TTL < GRACE_BREAKER_RESET_TIMEOUT:
    raise ImproperlyConfigured(
        f"GRACE_RESILIENCE_STATE_TTL ({GRACE_RESILIENCE_STATE_TTL} s) must be at least "
        f"GRACE_BREAKER_RESET_TIMEOUT ({GRACE_BREAKER_RESET_TIMEOUT} s)"
    )
from limits import parse as _parse_limit  # noqa: E402 - the rate limits below are checked at start-up

# "N/second|minute|hour|day" per (action, target); GRACE_RATE_LIMITS overrides per action: "name=limit,name=limit".
GRACE_RATE_LIMIT = env_str("GRACE_RATE_LIMIT", "30/hour")
GRACE_RATE_LIMITS = env_map("GRACE_RATE_LIMITS", form="action=N/period")
_rate_limits = [("GRACE_RATE_LIMIT", GRACE_RATE_LIMIT)] + [("GRACE_RATE_LIMITS", v) for v in GRACE_RATE_LIMITS.values()]
for _var, _limit in _rate_limits:
    try:
        _parse_limit(_limit)
    except ValueError:
        raise ImproperlyConfigured(f"{_var} must look like '30/hour' or '5 per minute', got {_limit!r}") from None
# (end remediation)

# --- cloud: AWS, Docker, Kubernetes -------------------------------------------
# AWS: credentials from boto3's standard chain (env, shared files, instance role) or a named profile.
# An endpoint URL points every client at a compatible endpoint (moto, LocalStack, a VPC endpoint).
GRACE_AWS_REGION = env_str("GRACE_AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "")))
GRACE_AWS_PROFILE = env_str("GRACE_AWS_PROFILE", "")
# Named accounts a step may pick with "account": "name=profile,name=profile" (profiles hold region, role...).
GRACE_AWS_ACCOUNTS = env_map("GRACE_AWS_ACCOUNTS", form="name=profile")
GRACE_AWS_ENDPOINT_URL = (
    env_url("GRACE_AWS_ENDPOINT_URL", "", schemes=("http", "https")) if os.environ.get("GRACE_AWS_ENDPOINT_URL") else ""
)
GRACE_AWS_CONNECT_TIMEOUT = env_float("GRACE_AWS_CONNECT_TIMEOUT", 3.0, minimum=0.1)
GRACE_AWS_READ_TIMEOUT = env_float("GRACE_AWS_READ_TIMEOUT", 10.0, minimum=0.1)
GRACE_AWS_MAX_ATTEMPTS = env_int("GRACE_AWS_MAX_ATTEMPTS", 3, minimum=1, maximum=10)
# Docker: the default engine (unix:// or tcp://), plus named engines a step may pick with "host".
GRACE_DOCKER_HOST = env_str("GRACE_DOCKER_HOST", os.environ.get("DOCKER_HOST", ""))
GRACE_DOCKER_HOSTS = env_map("GRACE_DOCKER_HOSTS", form="name=url")  # "name=url,name=url"
GRACE_DOCKER_TIMEOUT = env_float("GRACE_DOCKER_TIMEOUT", 10.0, minimum=0.1)
# tcp:// engines with TLS: a directory with ca.pem, cert.pem and key.pem (as docker's DOCKER_CERT_PATH).
GRACE_DOCKER_CERT_PATH = env_str("GRACE_DOCKER_CERT_PATH", os.environ.get("DOCKER_CERT_PATH", ""))
GRACE_DOCKER_TLS_VERIFY = env_bool("GRACE_DOCKER_TLS_VERIFY", True)
# Kubernetes: a kubeconfig file (default: $KUBECONFIG, then ~/.kube/config), or the pod's service account.
GRACE_KUBECONFIG = env_str("GRACE_KUBECONFIG", os.environ.get("KUBECONFIG", ""))
GRACE_KUBE_IN_CLUSTER = env_bool("GRACE_KUBE_IN_CLUSTER", bool(os.environ.get("KUBERNETES_SERVICE_HOST")))
GRACE_KUBE_CONTEXT = env_str("GRACE_KUBE_CONTEXT", "")
GRACE_KUBE_TIMEOUT = env_float("GRACE_KUBE_TIMEOUT", 10.0, minimum=0.1)
# GET /api/cloud/status/: every family is probed concurrently within this many seconds.
GRACE_CLOUD_STATUS_TIMEOUT = env_float("GRACE_CLOUD_STATUS_TIMEOUT", 1.2, minimum=0.1)
# (end cloud)

# --- approvals: governance, policy, notifications -----------------------------
# Global shadow mode: plan, gate and record, execute nothing. The admin's
# governance settings can switch it on too; either one is enough.
GRACE_SHADOW_MODE = env_bool("GRACE_SHADOW_MODE", False)
GRACE_APPROVAL_TTL_MINUTES = env_int("GRACE_APPROVAL_TTL_MINUTES", 30, minimum=1)
# Built-in tier raises (PolicyRule rows add to these).
GRACE_POLICY_PRODUCTION_ENVIRONMENTS = env_list("GRACE_POLICY_PRODUCTION_ENVIRONMENTS", ["production", "prod"])
GRACE_POLICY_MAX_BLAST_RADIUS = env_int("GRACE_POLICY_MAX_BLAST_RADIUS", 3, minimum=1)
GRACE_POLICY_RECENT_FAILURES = env_int("GRACE_POLICY_RECENT_FAILURES", 2, minimum=1)
# Notifications: retried by Celery with exponential backoff (seconds), never blocking a run.
GRACE_NOTIFY_MAX_RETRIES = env_int("GRACE_NOTIFY_MAX_RETRIES", 5, minimum=0)
GRACE_NOTIFY_RETRY_BACKOFF = env_int("GRACE_NOTIFY_RETRY_BACKOFF", 30, minimum=1)
GRACE_NOTIFY_TIMEOUT = env_float("GRACE_NOTIFY_TIMEOUT", 10.0, minimum=0.1)
# A notification still unattempted this long after it was written lost its hand-off: beat queues it again.
GRACE_NOTIFY_REDRIVE_AFTER = env_int("GRACE_NOTIFY_REDRIVE_AFTER", 120, minimum=10)
# Deliveries can be placed on workers with outbound network access.
GRACE_NOTIFY_QUEUE = env_str("GRACE_NOTIFY_QUEUE", "default")
GRACE_BASE_URL = env_str("GRACE_BASE_URL", f"http://127.0.0.1:{GRACE_PORT}").rstrip("/")
_EMAIL_BACKENDS = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
    "locmem": "django.core.mail.backends.locmem.EmailBackend",
}
_email_backend = env_str("GRACE_EMAIL_BACKEND", "smtp")
if _email_backend not in _EMAIL_BACKENDS:
    raise ImproperlyConfigured(
        f"GRACE_EMAIL_BACKEND must be one of {', '.join(_EMAIL_BACKENDS)}, got {_email_backend!r}"
    )
EMAIL_BACKEND = _EMAIL_BACKENDS[_email_backend]
EMAIL_HOST = env_str("GRACE_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("GRACE_EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("GRACE_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("GRACE_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("GRACE_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("GRACE_EMAIL_TIMEOUT", 10, minimum=1)
EMAIL_FILE_PATH = env_str("GRACE_EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str("GRACE_EMAIL_FROM", "grace@localhost")
# Audit log (docs/governance.md, "The audit log"): the sealer chains committed entries every second in
# batches; checkpoints of the chain's head are signed (Ed25519) and written to sinks outside the database.
GRACE_AUDIT_SEAL_BATCH = env_int("GRACE_AUDIT_SEAL_BATCH", 2000, minimum=1, maximum=50000)
GRACE_AUDIT_SEAL_MAX_LAG = env_int("GRACE_AUDIT_SEAL_MAX_LAG", 30, minimum=1)
# The signing key: PEM or base64 of the 32-byte seed, or a PEM file; neither: generated into VAR_DIR (mode 600).
GRACE_AUDIT_SIGNING_KEY = env_str("GRACE_AUDIT_SIGNING_KEY", "")
GRACE_AUDIT_SIGNING_KEY_FILE = env_str("GRACE_AUDIT_SIGNING_KEY_FILE", "")
if GRACE_AUDIT_SIGNING_KEY:  # checked at start-up; loaded (and the default generated) when first used
    parse_ed25519_private_key(GRACE_AUDIT_SIGNING_KEY.encode(), "GRACE_AUDIT_SIGNING_KEY")
elif GRACE_AUDIT_SIGNING_KEY_FILE:
    read_ed25519_key_file("GRACE_AUDIT_SIGNING_KEY_FILE", GRACE_AUDIT_SIGNING_KEY_FILE)
GRACE_AUDIT_ORIGIN = env_str("GRACE_AUDIT_ORIGIN", "grace")
if not re.fullmatch(r"[^\s]{1,100}", GRACE_AUDIT_ORIGIN):
    raise ImproperlyConfigured(
        f"GRACE_AUDIT_ORIGIN must be 1 to 100 characters without spaces, got {GRACE_AUDIT_ORIGIN!r}"
    )
GRACE_AUDIT_CHECKPOINT_SINKS = env_list(
    "GRACE_AUDIT_CHECKPOINT_SINKS", [f"file://{VAR_DIR.resolve() / 'audit-checkpoints.jsonl'}"]
)
for _sink in GRACE_AUDIT_CHECKPOINT_SINKS:
    if not re.fullmatch(r"(file://)?/[^\s]*[^/\s]|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", _sink):
        raise ImproperlyConfigured(
            f"GRACE_AUDIT_CHECKPOINT_SINKS: {_sink!r} is not file:///absolute/path or s3://bucket/prefix/"
        )
GRACE_AUDIT_CHECKPOINT_SECONDS = env_int("GRACE_AUDIT_CHECKPOINT_SECONDS", 60, minimum=1)
GRACE_AUDIT_CHECKPOINT_IDLE_SECONDS = env_int("GRACE_AUDIT_CHECKPOINT_IDLE_SECONDS", 3600, minimum=1)
GRACE_AUDIT_CHECKPOINT_MAX_AGE = env_int("GRACE_AUDIT_CHECKPOINT_MAX_AGE", 180, minimum=1)
GRACE_AUDIT_S3_LOCK_MODE = env_str("GRACE_AUDIT_S3_LOCK_MODE", "COMPLIANCE")
if GRACE_AUDIT_S3_LOCK_MODE not in ("COMPLIANCE", "GOVERNANCE"):
    raise ImproperlyConfigured(
        f"GRACE_AUDIT_S3_LOCK_MODE must be COMPLIANCE or GOVERNANCE, got {GRACE_AUDIT_S3_LOCK_MODE!r}"
    )
GRACE_AUDIT_S3_RETENTION_DAYS = env_int("GRACE_AUDIT_S3_RETENTION_DAYS", 365, minimum=1)
# (end approvals)

# --- learning: outcomes, statistics, benchmarks --------------------------------
# Earned autonomy: below this learned confidence the pipeline raises the tier.
GRACE_CONFIDENCE_TIER_THRESHOLD = env_float("GRACE_CONFIDENCE_TIER_THRESHOLD", 0.5, minimum=0.0)
if GRACE_CONFIDENCE_TIER_THRESHOLD > 1.0:
    raise ImproperlyConfigured("GRACE_CONFIDENCE_TIER_THRESHOLD must be at most 1.0")
# This many consecutive failures (failed or rolled back) pause a playbook for a diagnosis.
GRACE_PAUSE_AFTER_FAILURES = env_int("GRACE_PAUSE_AFTER_FAILURES", 3, minimum=1)
# Fewer counted attempts than this: confidence is 0 and the playbook is "exploring".
GRACE_MIN_ATTEMPTS_FOR_CONFIDENCE = env_int("GRACE_MIN_ATTEMPTS_FOR_CONFIDENCE", 3, minimum=1)
# Benchmarks: endpoints probed by the smoke (first URL) and full (every URL) suites.
# Empty: the http resources of the inventory service GRACE_BENCH_SERVICE (then GRACE's own health endpoint).
GRACE_BENCH_HTTP_URLS = env_list("GRACE_BENCH_HTTP_URLS", [])
GRACE_BENCH_SERVICE = env_str("GRACE_BENCH_SERVICE", "grace")
GRACE_BENCH_HTTP_TIMEOUT = env_float("GRACE_BENCH_HTTP_TIMEOUT", 2.0, minimum=0.1)
GRACE_BENCH_CELERY_TIMEOUT = env_float("GRACE_BENCH_CELERY_TIMEOUT", 2.0, minimum=0.1)
GRACE_BENCH_DIR = Path(env_str("GRACE_BENCH_DIR", str(VAR_DIR / "bench")))
# How long `POST .../benchmarks/<suite>/?wait=true` waits for the results.
GRACE_BENCH_WAIT_TIMEOUT = env_float("GRACE_BENCH_WAIT_TIMEOUT", 30.0, minimum=0.1)
# Regression detection: median + K x scaled MAD over the RUNS results before the persistence window, once
# MIN_SAMPLES exist, and never closer than a factor (1 + MIN_RELATIVE) of the median nor the metric's absolute
# floor (GRACE_BENCH_FLOORS overrides a metric's shipped floor). A value beyond that threshold is a regression
# only when at least PERSIST_K of the last PERSIST_N runs (this one included) are beyond it too. Persistence is
# what absorbs a busy machine's slow runs, so K is 2: with 3, the MAD of a busy baseline alone put the threshold
# at 2.3-2.6x the median and a 3x slowdown hid under it (tests/learning/test_detection.py, docs/learning.md).
GRACE_BENCH_BASELINE_RUNS = env_int("GRACE_BENCH_BASELINE_RUNS", 20, minimum=3)
GRACE_BENCH_MIN_SAMPLES = env_int("GRACE_BENCH_MIN_SAMPLES", 10, minimum=3)
if GRACE_BENCH_MIN_SAMPLES > GRACE_BENCH_BASELINE_RUNS:
    raise ImproperlyConfigured("GRACE_BENCH_MIN_SAMPLES must be at most GRACE_BENCH_BASELINE_RUNS")
GRACE_BENCH_MAD_K = env_float("GRACE_BENCH_MAD_K", 2.0, minimum=1.0)
GRACE_BENCH_MIN_RELATIVE = env_float("GRACE_BENCH_MIN_RELATIVE", 1.0, minimum=0.0)
GRACE_BENCH_PERSIST_K = env_int("GRACE_BENCH_PERSIST_K", 3, minimum=1)
GRACE_BENCH_PERSIST_N = env_int("GRACE_BENCH_PERSIST_N", 5, minimum=1)
if GRACE_BENCH_PERSIST_K > GRACE_BENCH_PERSIST_N:
    raise ImproperlyConfigured("GRACE_BENCH_PERSIST_K must be at most GRACE_BENCH_PERSIST_N")
GRACE_BENCH_FLOORS: dict[str, float] = {}
for _metric, _floor in env_map("GRACE_BENCH_FLOORS", form="metric=number").items():
    try:
        GRACE_BENCH_FLOORS[_metric] = float(_floor)
    except ValueError:
        raise ImproperlyConfigured(
            f"GRACE_BENCH_FLOORS: the floor of {_metric} must be a number, got {_floor!r}"
        ) from None
    if GRACE_BENCH_FLOORS[_metric] < 0:
        raise ImproperlyConfigured(f"GRACE_BENCH_FLOORS: the floor of {_metric} must not be negative")
# (end learning)
