"""Switchboard settings. Everything comes from the environment; see README "Configuration"."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from controlplane import env
from controlplane.stack import STATE_FILE, data_dir

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = data_dir()

_INSECURE_DEFAULT_KEY = "switchboard-development-only-not-secret"

try:
    SWITCHBOARD_ENV = env.choice("SWITCHBOARD_ENV", "development", ("development", "production", "test"))
    PRODUCTION = SWITCHBOARD_ENV == "production"
    DEBUG = env.boolean("DEBUG", not PRODUCTION)
    SECRET_KEY = env.text("SECRET_KEY", _INSECURE_DEFAULT_KEY)
    # Peppers API-key digests; separate from SECRET_KEY so rotating sessions leaves keys valid.
    SWITCHBOARD_KEY_PEPPER = env.text("SWITCHBOARD_KEY_PEPPER", SECRET_KEY)
    # Fernet keys (comma-separated, newest first) encrypting backend credentials at rest.
    SWITCHBOARD_ENCRYPTION_KEYS = env.fernet_keys("SWITCHBOARD_ENCRYPTION_KEYS")
    # HMAC key signing the hourly audit digests; empty means one derived from SECRET_KEY.
    SWITCHBOARD_AUDIT_SIGNING_KEY = env.text("SWITCHBOARD_AUDIT_SIGNING_KEY", "")
    ALLOWED_HOSTS = env.str_list(
        "ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"]
    )
    CSRF_TRUSTED_ORIGINS = env.str_list("CSRF_TRUSTED_ORIGINS", [])
    SWITCHBOARD_PORT = env.integer("SWITCHBOARD_PORT", 8000, minimum=1, maximum=65535)
    DATABASES = {"default": env.database("DATABASE_URL", DATA_DIR / STATE_FILE)}
    REDIS_URL = env.redis_url("REDIS_URL", DATA_DIR / STATE_FILE)
    LOG_LEVEL = env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
    LOG_FORMAT = env.choice("LOG_FORMAT", "json" if PRODUCTION else "console", ("json", "console"))
    if PRODUCTION:
        if DEBUG:
            raise env.SettingError("DEBUG: must be off when SWITCHBOARD_ENV=production")
        if SECRET_KEY == _INSECURE_DEFAULT_KEY or len(SECRET_KEY) < 32:
            raise env.SettingError("SECRET_KEY: production needs a random value of 32+ characters")
        if not ALLOWED_HOSTS:
            raise env.SettingError("ALLOWED_HOSTS: production needs the host names clients use")
        if not SWITCHBOARD_ENCRYPTION_KEYS:
            raise env.SettingError(
                "SWITCHBOARD_ENCRYPTION_KEYS: production needs a Fernet key for backend credentials "
                "(generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            )
except env.SettingError as exc:
    sys.stderr.write(f"switchboard: configuration error: {exc}\n")
    raise SystemExit(2) from None

DATABASES["default"]["CONN_MAX_AGE"] = 60
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 3

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "controlplane",
    "prompts",
    "serving",
    "rag",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "controlplane.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"

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

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "sb-cache",
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "sb-channels"},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ACKS_LATE = True  # a worker that dies mid-task leaves the message for another
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 300}
CELERY_TASK_DEFAULT_QUEUE = "switchboard"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Closes each hour of the audit chain with a signed digest.
    "audit-digest-hourly": {"task": "controlplane.audit_digest", "schedule": 3600.0},
    # Starts new budget periods (day, week, month) and raises threshold alerts.
    "budget-periods": {"task": "controlplane.budget_rollover", "schedule": 60.0},
    # Gateway usage ledger: web processes nudge the drain after each push; these are the safety net.
    "usage-drain": {"task": "serving.usage_drain", "schedule": 5.0},
    "usage-sweep": {"task": "serving.usage_sweep", "schedule": 60.0},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True  # serve static files without a collectstatic step in development
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/admin/login/"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # API keys first: DRF answers 401 (not 403) for a bad credential only when the first class
    # names a WWW-Authenticate scheme, and a revoked or expired key must read as 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.permissions.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.permissions.TeamScoped"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    # Services raise Django ValidationError with field errors; this makes them 400s, not 500s.
    "EXCEPTION_HANDLER": "controlplane.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchboard management API",
    "DESCRIPTION": "Teams, keys, backends, model and prompt versions, releases, endpoints, budgets, audit.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

if PRODUCTION:
    SESSION_COOKIE_SECURE = env.boolean("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env.boolean("CSRF_COOKIE_SECURE", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

from controlplane.logging import logging_config  # noqa: E402  (needs LOG_* above)

LOGGING = logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)
