"""gunicorn settings. Each worker imports the app after the fork and loads its own models:
never preload, TensorFlow and TFLite interpreters do not survive a fork."""

import os

bind = os.environ.get("MODELGATE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MODELGATE_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("MODELGATE_THREADS", "4"))
preload_app = False
timeout = int(os.environ.get("MODELGATE_TIMEOUT_SECONDS", "60"))
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
# Log lines carry the request id so a client's X-Request-ID can be found in the logs.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'

# Do not announce the server software or its version in every response.
import gunicorn.http.wsgi as _wsgi  # noqa: E402

_wsgi.SERVER = "modelgate"


def worker_exit(server, worker):
    """A stopping worker hands its batch job back to the queue at once (a crash leaves it to
    the lease, JOB_LEASE_SECONDS): another worker or the next start resumes it."""
    app = getattr(worker, "wsgi", None)
    runner = getattr(app, "extensions", {}).get("modelgate.job_runner")
    if runner is not None:
        runner.stop()
