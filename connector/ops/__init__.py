"""The operations edge: what tells operators how the connector is doing.

``metrics`` (every Prometheus metric, defined once), ``logs`` (the one way logging is set up
and what a line may carry), ``health`` (the /healthz, /readyz and /metrics endpoint) and
``status`` (the ``status`` command). Every stage counts and logs, so ``metrics``, ``logs`` and
``health`` import no stage; ``status`` reads the snapshot's manifests and schedule, so it sits
above the stages and none of them imports it (``.importlinter``).
"""
