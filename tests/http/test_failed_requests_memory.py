"""A worker thread serves one request after another in one context. Each request that raised
kept every earlier one alive: the copy of the context taken for the request's access-log line
held the exception the previous request left for its server's record, whose traceback held that
request's environ and so its own copy. A sync worker serving a route that fails now and then grew
without bound (about 20 kB per failed request: frames, environs, spans). Real gunicorn, sync and
gthread workers, a Flask app.
"""

from __future__ import annotations

import pytest
import requests
from loopback import free_port
from stopping import Service

FLASK_APP = """
import gc
import flask, tracekit, tracekit.flask

tracekit.init("shop")
app = flask.Flask("shop")

class OrderLookupFailed(Exception):
    pass

@app.get("/orders/<int:order_id>")
def order(order_id):
    raise OrderLookupFailed(order_id)

@app.get("/failures-alive")
def failures_alive():
    gc.collect()
    return str(sum(isinstance(o, OrderLookupFailed) for o in gc.get_objects()))

tracekit.flask.init_app(app)
"""


@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_a_worker_keeps_no_earlier_failed_request_alive(service: Service, worker: str) -> None:
    service.write("app.py", FLASK_APP)
    port = free_port()
    service.start(
        "-m", "gunicorn", "-k", worker, "-w", "1", "--threads", "1",
        "-b", f"127.0.0.1:{port}", "app:app",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/failures-alive")

    for order_id in range(40):
        assert requests.get(f"{url}/orders/{order_id}", timeout=10).status_code == 500

    # the last one waits for its server's record (already written); none before it
    alive = int(requests.get(url + "/failures-alive", timeout=10).text)
    assert alive <= 1
