"""The control plane: the admin API and its listener, run by the process that owns the registry."""
