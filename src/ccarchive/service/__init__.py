"""``ccarchive serve``: the sidecar beside cc-backend (HTTP stop_job + admin API, NATS, metrics).

Modules: ``serve`` (wiring and the request logic), ``http`` (stdlib HTTP server and routing),
``stopjob`` (cc-backend's stop_job against the job DB), ``auth`` (cc-backend's Ed25519 JWTs),
``nats`` (line-protocol job events), ``metrics`` (Prometheus).  Nothing is imported here, so
importing the package costs nothing for the other commands.
"""
