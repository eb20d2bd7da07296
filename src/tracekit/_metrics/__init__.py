"""Helpers behind ``tracekit.metrics``.

- ``labels``: label values bounded in number and length, safe to print (``BoundedLabel``).
- ``exemplars``: the exemplar filter, which measurements link to their trace.
- ``exposition``: what a scrape is served (a registry, or every worker's files summed in
  multiprocess mode) and the upkeep of the shared directory.
- ``port``: the metrics port ``install`` opens, stands by for, and frees for a reloader's workers.
- ``families``: one family per metric name in a registry, whose series every service's
  collectors add to.
- ``local``: single-process metric families that count under one lock and format only when
  scraped, exposed exactly as prometheus-client's own classes would be.
- ``fold``: exited processes' multiprocess files folded into one per kind, under a lock tracekit's
  readers of the directory take, so that recycled workers' files do not pile up.
- ``server``: the metrics port's HTTP server, its connections bounded in number and time.
"""
