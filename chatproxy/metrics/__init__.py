"""Prometheus metrics (`GET /metrics`) and the `Server-Timing` header.

- `exchange`: what a request's upstream call took, handed from the pipeline to the request's
  end through a context variable (no prometheus-client import: the pipeline imports it).
- `families`: every `chatproxy_*` family of one app, with bounded label values and the
  pre-bound children the per-request path uses; `fast`: the counters and histograms behind
  them in one process (prometheus-client's own cost about ten times as much per update).
- `web`: the app's wiring (`setup_metrics`), the `/metrics` handler, and the hooks the
  request middleware and the stream relay call.
- `stores`, `local`: the history store's operations, the local engine's state.

One `CollectorRegistry` per app, as tests build many; with `PROMETHEUS_MULTIPROC_DIR` set,
prometheus-client's multiprocess mode instead, so that several serving processes' values
add up on scrape.
"""
