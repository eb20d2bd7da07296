"""gunicorn settings (``-c``) whose logs name tracekit's fields, as a team's format might.

The root logger, ``gunicorn.access`` and ``gunicorn.error`` share one format, so an app's line
and gunicorn's lines about the same request can be compared; ``defaults`` cover the master's
lines, logged before any init.
"""

_FIELDS = {"correlation_id": "-", "trace_id": "-"}

accesslog = "-"
access_log_format = '"%(r)s" %(s)s'
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "fields": {
            "()": "logging.Formatter",
            "fmt": "%(name)s [%(correlation_id)s %(trace_id)s] %(message)s",
            "defaults": _FIELDS,
        }
    },
    "handlers": {
        "out": {
            "class": "logging.StreamHandler",
            "formatter": "fields",
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"handlers": ["out"], "level": "INFO"},
    "loggers": {
        "gunicorn.access": {"handlers": ["out"], "level": "INFO", "propagate": False},
        "gunicorn.error": {"handlers": ["out"], "level": "INFO", "propagate": False},
    },
}
