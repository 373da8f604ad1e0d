"""What regfd tells its operators: Prometheus metrics and the health facts of `regfd status`."""
