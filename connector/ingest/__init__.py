"""Ingest stage: source topics -> decode -> map -> merge into the state, one Kafka transaction a batch.

``service.IngestService`` is the runner (``carecloud-connector ingest``): ``partitions`` owns the
assigned partitions' local stores, ``transaction`` the batch loop, ``message`` one message's
handling (size checks, decode -> map -> merge), ``batch`` one batch's view of a partition,
``barrier`` the per-message failure barrier, ``dead_letter``, ``dlq_read`` and ``dlq_replay``
the dead-letter topic (``dlq`` re-exports them; ``dlq_commands`` its ``dlq list|replay``),
``report`` the metrics, ``watchdog`` the deadline on Kafka calls. The state it writes (row
format, merge, local store) is ``connector.state``.
Nothing is imported here, so ``--help`` stays fast.
"""
