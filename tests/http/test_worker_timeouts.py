"""A request past gunicorn's ``--timeout``: the sync worker stops it with ``SystemExit`` and the
client gets gunicorn's 500. The span was named just "GET", with no route and no status (the
metrics counted it under ``_unmatched``), though Flask and Django had matched the route before
the view ran. Real gunicorn, a real sync worker timing out.
"""

from __future__ import annotations

import pytest
import requests
from loopback import free_port
from stopping import Service, server_spans

FLASK_APP = """
import time
import flask, tracekit, tracekit.flask

tracekit.init("shop")
app = flask.Flask("shop")

@app.get("/orders/<int:order_id>")
def order(order_id):
    time.sleep(30)

@app.get("/ready")
def ready():
    return "ok"

tracekit.flask.init_app(app)
"""

DJANGO_APP = """
import time
import tracekit
from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="test", DEBUG=False,
    MIDDLEWARE=["tracekit.django.TracekitMiddleware"],
)
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

def order(request, order_id):
    time.sleep(30)

urlpatterns = [
    path("orders/<int:order_id>", order),
    path("ready", lambda request: HttpResponse("ok")),
]
tracekit.init("shop")
app = get_wsgi_application()
"""


@pytest.mark.parametrize("source", [FLASK_APP, DJANGO_APP], ids=["flask", "django"])
def test_a_request_past_the_workers_timeout_keeps_its_route_and_the_500(
    service: Service, source: str
) -> None:
    service.write("app.py", source)
    port = free_port()
    service.start(
        "-m", "gunicorn", "-k", "sync", "-w", "1", "--timeout", "2",
        "-b", f"127.0.0.1:{port}", "app:app",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/ready")

    answer = requests.get(url + "/orders/7", headers={"X-Correlation-ID": "slow-7"}, timeout=30)

    assert answer.status_code == 500  # gunicorn's page
    assert service.terminate() == 0
    spans = {span.correlation_id: span for span in server_spans(service.spans())}
    slow = spans["slow-7"]
    assert (slow.name, slow.status) == ("GET /orders/{order_id}", "ERROR")
    assert slow.attributes["http.route"] == "/orders/{order_id}"
    assert slow.attributes["http.response.status_code"] == 500
    assert slow.attributes["error.type"] == "SystemExit"


EXITING_APP = """
import sys
import flask, tracekit, tracekit.flask

tracekit.init("shop")
app = flask.Flask("shop")

@app.get("/orders/<int:order_id>")
def order(order_id):
    sys.exit(3)

@app.get("/ready")
def ready():
    return "ok"

tracekit.flask.init_app(app)
"""


def test_a_view_exiting_a_gthread_worker_is_not_said_answered(service: Service) -> None:
    """A gthread worker answers no ``SystemExit`` (the request's thread ends the worker): the
    span keeps the route but says no status the client never got."""
    service.write("app.py", EXITING_APP)
    port = free_port()
    service.start(
        "-m", "gunicorn", "-k", "gthread", "--threads", "2", "-w", "1",
        "-b", f"127.0.0.1:{port}", "app:app",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/ready")

    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/orders/7", headers={"X-Correlation-ID": "exit-7"}, timeout=30)

    service.terminate()
    spans = {span.correlation_id: span for span in server_spans(service.spans())}
    exited = spans["exit-7"]
    assert exited.name == "GET /orders/{order_id}"
    assert "http.response.status_code" not in exited.attributes
    assert exited.attributes["error.type"] == "SystemExit"
