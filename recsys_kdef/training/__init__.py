"""The training loop and what it watches: the trainer, its batch runner, early stopping,
non-finite and divergence watches, the run log, table decay and process settings."""
