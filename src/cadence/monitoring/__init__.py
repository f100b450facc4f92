"""Is Cadence working, and what is it doing: health and readiness checks, ``cadence doctor`` (with
its DNS checks), Prometheus metrics and JSON logs. Read by operators, never by the send path's
decisions."""
