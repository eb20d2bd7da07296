"""A WSGI app whose exception leaves it before any of its response went out: the server answers.

Flask with ``PROPAGATE_EXCEPTIONS`` (and ``app.testing``) lets a view's exception out through
tracekit's middleware to the server, which answers with its own 500, as werkzeug's, gunicorn's
and wsgiref's servers do; gunicorn answers an ``OSError`` with nothing (it takes it for its own
socket failing). The span and the metrics say what the client got, under real gunicorn.
"""

from __future__ import annotations

import pytest
import requests
from loopback import free_port
from prometheus_client.parser import text_string_to_metric_families
from stopping import Service, server_spans

APP = """
import flask, tracekit, tracekit.flask
from tracekit.metrics import wsgi_metrics_app
from werkzeug.middleware.dispatcher import DispatcherMiddleware

tracekit.init("shop")
app = flask.Flask("shop")
app.config["PROPAGATE_EXCEPTIONS"] = True

@app.get("/orders/<int:order_id>")
def order(order_id):
    raise KeyError(order_id)

@app.get("/export")
def export():
    raise FileNotFoundError("export.csv")

tracekit.flask.init_app(app)
wsgi_app = DispatcherMiddleware(app, {"/metrics": wsgi_metrics_app()})
"""


def _counts(exposition: str) -> dict[tuple[str, str, str], float]:
    """``(http_route, http_response_status_code, error_type)`` -> requests counted."""
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    return {
        (s.labels["http_route"], s.labels["http_response_status_code"], s.labels["error_type"]): (
            s.value
        )
        for s in families["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }


@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_gunicorns_own_answer_to_a_propagated_exception_is_recorded(
    service: Service, worker: str
) -> None:
    """The client got gunicorn's 500; the span had no ``http.response.status_code`` and the
    metrics counted the request under an empty status, outside every 5xx panel."""
    service.write("app.py", APP)
    port = free_port()
    service.start(
        "-m", "gunicorn", "-k", worker, "-w", "1", "-b", f"127.0.0.1:{port}", "app:wsgi_app"
    )
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/metrics")

    failed = requests.get(url + "/orders/7", headers={"X-Correlation-ID": "order-7"}, timeout=10)
    with pytest.raises(requests.ConnectionError):  # gunicorn closes it unanswered
        requests.get(url + "/export", headers={"X-Correlation-ID": "export-1"}, timeout=10)
    counts = _counts(requests.get(url + "/metrics", timeout=10).text)

    assert failed.status_code == 500
    assert "X-Correlation-ID" not in failed.headers  # gunicorn's page: no middleware reaches it
    assert counts[("/orders/{order_id}", "500", "KeyError")] == 1
    assert counts[("/export", "", "FileNotFoundError")] == 1
    assert service.terminate() == 0
    spans = {span.correlation_id: span for span in server_spans(service.spans())}
    order, export = spans["order-7"], spans["export-1"]
    assert (order.name, order.status) == ("GET /orders/{order_id}", "ERROR")
    assert order.attributes["http.response.status_code"] == 500
    assert order.attributes["error.type"] == "KeyError"
    assert (export.name, export.status) == ("GET /export", "ERROR")
    assert "http.response.status_code" not in export.attributes
    assert export.attributes["error.type"] == "FileNotFoundError"
