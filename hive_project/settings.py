"""Django settings for Hive, driven by the environment (see README, "Configuration").

With no DATABASE_URL and no REDIS_URL, Hive runs on SQLite and an embedded
Redis under var/ so a bare machine with Python needs nothing else.
"""

import os
import warnings
from datetime import timedelta

from hive_core.config import (
    BASE_DIR,
    ConfigError,
    celery_url,
    database_config,
    embedded_redis_socket,
    env_bool,
    env_int,
    env_list,
    env_str,
    ip_networks,
    path_list,
    redis_url,
    secret_key,
    shell_commands,
    throttle_rate,
    var_dir,
)

HIVE_ENV = env_str("HIVE_ENV", "development")
if HIVE_ENV not in {"development", "production"}:
    raise ConfigError(f"HIVE_ENV: {HIVE_ENV!r} is not one of development, production")
PRODUCTION = HIVE_ENV == "production"

VAR_DIR = var_dir()
SECRET_KEY = secret_key(production=PRODUCTION, directory=VAR_DIR)
DEBUG = env_bool("HIVE_DEBUG", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ConfigError("ALLOWED_HOSTS: production needs the host names Hive is served on")
if PRODUCTION and "*" in ALLOWED_HOSTS:
    # `*` turns Django's Host check off, and with it the WebSocket origin check's
    # defence against DNS rebinding (hive_core/websocket_origin.py).
    raise ConfigError(
        "ALLOWED_HOSTS: '*' accepts any Host header; in production list the host names "
        "Hive is served on (e.g. hive.example.com)"
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "axes",
    "csp",
    "hive_core",
    "events",
    "agents",
    "coordination",
    "commands",
    "notifications",
    "dashboard",
    "ops",
    "hive_project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Early, so every response (the 503 below aside: JSON) carries the policy.
    "csp.middleware.CSPMiddleware",
    "hive_core.web_bound.DatabaseUnavailableMiddleware",
    "hive_core.middleware.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hive_project.urls"
ASGI_APPLICATION = "hive_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "hive_core.context_processors.ops_links",
            ],
        },
    },
]

DATABASES = {
    "default": database_config(env_str("DATABASE_URL"), default_sqlite=VAR_DIR / "hive.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The web process opens at most this many database connections, whatever the number
# of concurrent requests: one per request thread and one for WebSockets
# (hive_core/web_bound.py). A request waits up to HIVE_WEB_DB_WAIT_MS for a free
# thread, then gets a 503 with Retry-After. Size PostgreSQL's max_connections with
# it (README, "Sizing PostgreSQL").
HIVE_WEB_DB_CONNECTIONS = env_int("HIVE_WEB_DB_CONNECTIONS", 20, minimum=2)
HIVE_WEB_DB_WAIT_MS = env_int("HIVE_WEB_DB_WAIT_MS", 5000)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Logins (/accounts/login/ and /admin/login/) are counted by django-axes: after
# HIVE_LOGIN_FAILURE_LIMIT failures of one username from one address, that pair is
# refused (429, even with the right password) for HIVE_LOGIN_COOLOFF_MINUTES. Keyed
# by the pair, so guessing from one address cannot lock a user out everywhere, nor
# lock out everyone behind that address; a success resets the count. API tokens and
# sessions never pass through authenticate(), so they are not counted.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
HIVE_LOGIN_FAILURE_LIMIT = env_int("HIVE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
HIVE_LOGIN_COOLOFF_MINUTES = env_int("HIVE_LOGIN_COOLOFF_MINUTES", 15, minimum=1)
AXES_FAILURE_LIMIT = HIVE_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=HIVE_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The address the server gives the request (daphne applies X-Forwarded-For as it is
# told to), never a header read here that any client may write.
AXES_CLIENT_IP_CALLABLE = "hive_core.middleware.client_address"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve app static files straight from the apps in development, so `make run`
# needs no collectstatic step; production images run collectstatic.
WHITENOISE_USE_FINDERS = not PRODUCTION
if not PRODUCTION:
    # ... so the collected folder is missing there, which WhiteNoise warns about on
    # every start (a harmless warning a newcomer would take for a fault).
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)

# --- Redis: Celery broker and results, Channels layer, agent streams ---------

REDIS_EMBEDDED_SOCKET = embedded_redis_socket(VAR_DIR)
REDIS_EMBEDDED = not env_str("REDIS_URL")
REDIS_URL = redis_url(env_str("REDIS_URL"), embedded_socket=REDIS_EMBEDDED_SOCKET)

# Celery reads every CELERY_* setting (hive_project/celery.py). The reliability
# model is in DESIGN.md: the database is the record, Redis is transport.
CELERY_BROKER_URL = celery_url(REDIS_URL)
CELERY_RESULT_BACKEND = celery_url(REDIS_URL)
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup opens a new database connection for every task unless
# told to reuse it; with PostgreSQL that connect was ~40% of a step's time here.
# Connections are still closed when broken or older than CONN_MAX_AGE, after
# every task (hive_project/celery.py), as Django does after every request.
CELERY_DB_REUSE_MAX = 1000
# An unacked message is redelivered after this long; it must exceed the longest
# step, and it is set for the broker and the result backend alike.
HIVE_VISIBILITY_TIMEOUT = env_int("HIVE_VISIBILITY_TIMEOUT", 3600, minimum=60)
# A queue is one Redis list per priority, all ten (coordination/dispatch.py: a step's
# priority travels as the broker's), named `<queue><sep><n>` with kombu's separator.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": HIVE_VISIBILITY_TIMEOUT,
    "priority_steps": list(range(10)),
    "sep": "\x06\x16",
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": HIVE_VISIBILITY_TIMEOUT}
CELERY_TASK_DEFAULT_QUEUE = "hive.default"
# A run started by a step of another (a sub-workflow) is at most this deep: a cycle
# through workflows saved later than the check at load time stops here.
HIVE_SUBWORKFLOW_DEPTH = env_int("HIVE_SUBWORKFLOW_DEPTH", 10, minimum=1)
# Task events stay off by default: Flower switches them on while it runs
# (enable_events), and each event is another Redis write per task.

CHANNEL_LAYERS = {
    "default": {
        # The pub/sub layer delivered 100% of a 5,000-event burst here where the
        # default layer silently dropped 3-31% (DESIGN.md, known pitfalls).
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        # redis-py's 5 s default socket timeout breaks idle blocking reads.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
    }
}

# --- API ----------------------------------------------------------------------

# Slash commands a user may execute, per user, through the API and the console
# together (commands/throttles.py; DRF rate: N/s|m|h|d).
HIVE_COMMAND_THROTTLE = throttle_rate("HIVE_COMMAND_THROTTLE", "60/min")
# Throttle counts live in Redis, so every web process counts into one bucket per user:
# in a per-process cache, N web processes would let a user execute N times the rate.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "hive:cache",
    }
}

# An API token is refused this many days after it was made or rotated (dashboard
# "API token" page, POST /api/v1/auth/token/rotate/, `hive token USER --rotate`);
# 0 = never expires.
HIVE_TOKEN_TTL = env_int("HIVE_TOKEN_TTL", 90)

REST_FRAMEWORK = {
    # Token first: DRF answers an anonymous request with the first class's
    # WWW-Authenticate challenge, which makes it a 401 rather than a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "hive_core.auth.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "hive_core.api.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": ["hive_core.parsers.HiveJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "hive_core.api.HivePagination",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "hive_core.schema.HiveAutoSchema",
    # A throttle keyed by address uses REMOTE_ADDR, which only a trusted proxy sets
    # (HIVE_TRUSTED_PROXIES); DRF's default (None) read X-Forwarded-For from anyone.
    "NUM_PROXIES": 0,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hive API",
    "DESCRIPTION": "Agents, workflows, runs, steps and events. Every 4xx has the body "
    '`{"error": {"code", "message", "fields"}}`.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI from the drf-spectacular-sidecar wheel: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No "valid" badge from validator.swagger.io: off any localhost, Swagger UI loads it
    # as an image with the schema's address (refused by the CSP's img-src, and a leak).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "AgentStatus": "agents.models.Agent.Status",
        "RunState": "coordination.models.Run.State",
        "StepState": "coordination.models.StepRun.State",
    },
}

# --- Hive ---------------------------------------------------------------------

HIVE_BIND = env_str("HIVE_BIND", "127.0.0.1")
HIVE_PORT = env_int("HIVE_PORT", 8000, minimum=1)
HIVE_FLOWER_PORT = env_int("HIVE_FLOWER_PORT", 5555, minimum=1)
# Where the dashboard links to Flower; by default the dashboard's host on HIVE_FLOWER_PORT.
HIVE_FLOWER_URL = env_str("HIVE_FLOWER_URL")
# Prometheus scrapes /metrics with `Authorization: Bearer <this>`; unset, only
# logged-in staff users see it.
HIVE_METRICS_TOKEN = env_str("HIVE_METRICS_TOKEN")
HIVE_ADMIN_USER = env_str("HIVE_ADMIN_USER", "admin")
HIVE_AGENTS_FILE = BASE_DIR / env_str("HIVE_AGENTS_FILE", "hive.agents.yaml")
# `hive up` restarts a process that exits at once, the next time in a row after
# HIVE_RESTART_DELAY seconds, doubling up to HIVE_RESTART_DELAY_MAX (ops/restarts.py).
HIVE_RESTART_DELAY = env_int("HIVE_RESTART_DELAY", 1, minimum=1)
HIVE_RESTART_DELAY_MAX = env_int("HIVE_RESTART_DELAY_MAX", 30, minimum=1)
if HIVE_RESTART_DELAY_MAX < HIVE_RESTART_DELAY:
    raise ConfigError("HIVE_RESTART_DELAY_MAX: must be at least HIVE_RESTART_DELAY")
# An agent heartbeats every HIVE_HEARTBEAT_INTERVAL seconds and is marked
# offline by the coordinator after HIVE_AGENT_TIMEOUT seconds of silence.
HIVE_HEARTBEAT_INTERVAL = env_int("HIVE_HEARTBEAT_INTERVAL", 3, minimum=1)
HIVE_AGENT_TIMEOUT = env_int("HIVE_AGENT_TIMEOUT", 10, minimum=2)
if HIVE_AGENT_TIMEOUT <= HIVE_HEARTBEAT_INTERVAL:
    raise ConfigError("HIVE_AGENT_TIMEOUT: must be longer than HIVE_HEARTBEAT_INTERVAL")
HIVE_REAPER_INTERVAL = env_int("HIVE_REAPER_INTERVAL", 2, minimum=1)
# The most steps one agent runs in parallel (its prefork pool's processes), for the
# API's scale, `hive agent --concurrency`, hive.agents.yaml and the admin alike. Each
# pool process is a whole Python interpreter with Django loaded (~42 MiB: two agents
# scaled to 255 took a machine to 21 GiB); steps mostly wait on I/O, so four per CPU
# keep the CPUs busy, and 4 is the floor for a small machine.
HIVE_AGENT_MAX_CONCURRENCY = env_int(
    "HIVE_AGENT_MAX_CONCURRENCY", max(4, 4 * (os.cpu_count() or 1)), minimum=1
)

# --- The engine (coordination/) --------------------------------------------------

# A queued step not claimed this long, whose queue in Redis is empty, was lost
# (a FLUSHALL, a Redis restart): the reaper sends it again.
HIVE_DISPATCH_TIMEOUT = env_int("HIVE_DISPATCH_TIMEOUT", 30, minimum=1)
# A running step's lease; its agent renews it every heartbeat. One that runs out
# (the pool process died) is tried again by the reaper.
HIVE_STEP_LEASE = env_int("HIVE_STEP_LEASE", 30, minimum=2)
# How many times a step may lose its worker before it fails instead of looping.
HIVE_STEP_MAX_LOST = env_int("HIVE_STEP_MAX_LOST", 3, minimum=1)
# The most items a foreach may expand to: its steps are made in one transaction
# (holding the run's lock), and a list from a request's params can hold a million.
HIVE_FOREACH_MAX = env_int("HIVE_FOREACH_MAX", 10_000, minimum=1)
# Templates (coordination/templates.py) run in agents and, for dry runs, `when` and
# overlap keys, in the web process: the longest string or list one may build, in
# characters or items (and a number's bits), and the seconds one render may take.
HIVE_TEMPLATE_MAX_LENGTH = env_int("HIVE_TEMPLATE_MAX_LENGTH", 1_000_000, minimum=1000)
HIVE_TEMPLATE_TIMEOUT = env_int("HIVE_TEMPLATE_TIMEOUT", 2, minimum=1)
# May the user who started a run approve its approval gates? Convenient alone in
# development; in production a gate is a second person's decision (API 403
# `self_approval`, a `denied` /hive:approve, an error in the admin).
HIVE_ALLOW_SELF_APPROVAL = env_bool("HIVE_ALLOW_SELF_APPROVAL", not PRODUCTION)
# Seconds between a step's soft time limit (its `timeout`) and the hard kill.
HIVE_HARD_TIMEOUT_GRACE = env_int("HIVE_HARD_TIMEOUT_GRACE", 10, minimum=1)

# --- Messaging (agents/mailbox.py, agents/inbox.py) -------------------------------

# A message whose handler failed this many deliveries goes to the dead-letter stream.
HIVE_MAX_DELIVERIES = env_int("HIVE_MAX_DELIVERIES", 5, minimum=1)
# Larger payloads (as JSON, UTF-8) are refused when sent.
HIVE_MESSAGE_MAX_BYTES = env_int("HIVE_MESSAGE_MAX_BYTES", 64 * 1024, minimum=1)
# Milliseconds a delivered message may stay unacknowledged before another consumer
# (or a restarted one) takes it over with XAUTOCLAIM; it must exceed the slowest
# handler's batch, or live consumers' messages are handled twice over (the claim in
# the database keeps the effects once, but the work is wasted).
HIVE_INBOX_CLAIM_IDLE = env_int("HIVE_INBOX_CLAIM_IDLE", 15000, minimum=100)

# --- Skills (agents/skills/) ----------------------------------------------------

# Modules imported at start-up whose @skill functions join the built-in ones.
HIVE_SKILL_MODULES = env_list("HIVE_SKILL_MODULES", [])
# http.request reaches only these hosts (`host` or `host:port`); none by default.
HIVE_HTTP_ALLOWED_HOSTS = env_list("HIVE_HTTP_ALLOWED_HOSTS", [])
HIVE_HTTP_MAX_RESPONSE_BYTES = env_int("HIVE_HTTP_MAX_RESPONSE_BYTES", 1024 * 1024, minimum=1)
# shell.run runs only these operator-written argv templates, never a shell.
HIVE_SHELL_COMMANDS = shell_commands("HIVE_SHELL_COMMANDS")
HIVE_SHELL_TIMEOUT = env_int("HIVE_SHELL_TIMEOUT", 600, minimum=1)
HIVE_SHELL_MAX_OUTPUT = env_int("HIVE_SHELL_MAX_OUTPUT", 64 * 1024, minimum=1)
# release.build and release.test work on the components (folders) of this source
# tree; the shipped one is the small example app the /demo:release command uses.
HIVE_RELEASE_SOURCE_DIR = (BASE_DIR / env_str("HIVE_RELEASE_SOURCE_DIR", "examples/app")).resolve()
# release.build writes <version>/<component>.tar.gz here.
HIVE_RELEASE_ARTIFACT_DIR = VAR_DIR / "artifacts"
# llm.chat talks to an OpenAI-compatible endpoint; unset means the skill is disabled.
HIVE_LLM_BASE_URL = env_str("HIVE_LLM_BASE_URL")

# Notifications (notifications/): mail through SMTP when EMAIL_HOST is set, else the
# console (dev); a failed delivery is tried again after HIVE_NOTIFY_BACKOFF seconds,
# doubled each try, up to HIVE_NOTIFY_MAX_ATTEMPTS tries. HIVE_PUBLIC_URL is the
# dashboard's address, for the links in notices.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "hive@localhost")
HIVE_NOTIFY_MAX_ATTEMPTS = env_int("HIVE_NOTIFY_MAX_ATTEMPTS", 5, minimum=1)
HIVE_NOTIFY_BACKOFF = env_int("HIVE_NOTIFY_BACKOFF", 10, minimum=1)
# Webhooks reach public addresses only, and these hosts (`host` or `host:port`) besides.
HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS = env_list("HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS", [])
HIVE_PUBLIC_URL = env_str("HIVE_PUBLIC_URL", f"http://{HIVE_BIND}:{HIVE_PORT}").rstrip("/")
HIVE_LLM_API_KEY = env_str("HIVE_LLM_API_KEY")
HIVE_LLM_MODEL = env_str("HIVE_LLM_MODEL", "gpt-4o-mini")
HIVE_LLM_TIMEOUT = env_int("HIVE_LLM_TIMEOUT", 120, minimum=1)

# --- Slash commands (commands/) ---------------------------------------------------

# Folders of command definition files, beside the shipped commands/definitions/.
HIVE_COMMAND_DIRS = path_list("HIVE_COMMAND_DIRS")
# The longest command text accepted, in characters: a parse error points at a
# token, so the text must stay printable.
HIVE_COMMAND_MAX_LENGTH = env_int("HIVE_COMMAND_MAX_LENGTH", 10_000, minimum=100)
# The largest body a webhook trigger (POST /hooks/<name>) reads, in bytes; more is a 413.
HIVE_WEBHOOK_MAX_BYTES = env_int("HIVE_WEBHOOK_MAX_BYTES", 1_000_000, minimum=1)
# Workflow, command and agent definition files (hive_core/yamlfile.py): the largest
# file read, and how many values its YAML may hold once aliases are expanded. The shipped
# files are at most 3.2 KB and 181 values (demo/release.md); a 603-byte alias bomb
# expands to 9**9 values.
HIVE_DEFINITION_MAX_BYTES = env_int("HIVE_DEFINITION_MAX_BYTES", 1024 * 1024, minimum=1024)
HIVE_DEFINITION_MAX_VALUES = env_int("HIVE_DEFINITION_MAX_VALUES", 100_000, minimum=100)

# --- Proxies (hive_core/proxies.py) ---------------------------------------------

# Addresses or networks (`10.0.0.0/8,127.0.0.1`) of the reverse proxies in front of
# the web process. Only their X-Forwarded-For and X-Forwarded-Proto are believed (the
# client's address for login and API limits, and whether the request was HTTPS);
# empty, none are: every client is the address it connects from. No
# SECURE_PROXY_SSL_HEADER: it would believe X-Forwarded-Proto from anyone.
HIVE_TRUSTED_PROXIES = ip_networks("HIVE_TRUSTED_PROXIES")

# --- Content-Security-Policy (django-csp) --------------------------------------------

# Every page's scripts, styles, images and connections come from Hive's own origin
# only: no inline script or style (the templates have none; Swagger UI's start script
# is served as a file by SpectacularSwaggerSplitView, django-celery-beat's inline
# script is replaced, commands/admin.py), no plugin, no <base>, no framing, forms post
# only here. 'self' covers the dashboard's same-origin ws:/wss: socket in Chromium,
# Firefox and Safari (CSP Level 3; tests/security/test_csp.py checks it in Chromium).
# data: images are the SVG icons inside Swagger UI's CSS.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- Production hardening (checked by `manage.py check --deploy`) -------------

if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("HIVE_SSL_REDIRECT", True)
    # Probes call the container's plain-HTTP port directly, behind no TLS proxy.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("HIVE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Agents and the coordinator log every task at INFO; WARNING keeps them quiet.
HIVE_LOG_LEVEL = env_str("HIVE_LOG_LEVEL", "INFO").upper()
if HIVE_LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ConfigError(f"HIVE_LOG_LEVEL: {HIVE_LOG_LEVEL!r} is not a log level (e.g. INFO)")
# json: one object a line (time, level, logger, pid, message and the event's run,
# step, agent and attempt) for a log shipper to index, so one run can be followed
# across every agent and the coordinator. It is the production default; in
# development, text reads better in `hive up`'s interleaved output.
HIVE_LOG_FORMAT = env_str("HIVE_LOG_FORMAT", "json" if PRODUCTION else "text").lower()
if HIVE_LOG_FORMAT not in {"json", "text"}:
    raise ConfigError(f"HIVE_LOG_FORMAT: {HIVE_LOG_FORMAT!r} is not one of json, text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {
            "()": "hive_core.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {"()": "hive_core.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": HIVE_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": HIVE_LOG_LEVEL},
    # django-axes says "BEGIN" at INFO in every process (web, each agent, coordinator).
    "loggers": {"axes.apps": {"level": "WARNING"}},
}

# Every coordinator (a worker; the leader's beat in a thread, see `hive coordinator`)
# consumes hive.coordinator; agents never do. The reaper's and the dequeue's tasks
# stay routed for messages an older coordinator's beat sent.
HIVE_COORDINATOR_QUEUE = "hive.coordinator"
CELERY_TASK_ROUTES = {
    "coordination.reap_task": {"queue": HIVE_COORDINATOR_QUEUE},
    "commands.command_schedule_task": {"queue": HIVE_COORDINATOR_QUEUE},
    "commands.invocations_dequeue_task": {"queue": HIVE_COORDINATOR_QUEUE},
}
# The leading coordinator's beat reads its schedule from the database
# (django-celery-beat's DatabaseScheduler), so schedules made in admin, the API or
# /hive:schedule apply without a restart; Hive's subclass makes each firing happen
# once across a change of leader (commands/beat.py). The reaper and the queued
# commands are not beat entries: the leader runs them itself (coordination.leadership).
CELERY_BEAT_SCHEDULER = "commands.beat:HiveScheduler"
CELERY_BEAT_SCHEDULE = {}
# How many coordinators `hive up` starts: one leads, the others stand by to take over.
HIVE_COORDINATORS = env_int("HIVE_COORDINATORS", 1, minimum=1)
