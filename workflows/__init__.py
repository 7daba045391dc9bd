"""One module per business process: the only place that knows the order of steps."""
