"""Process-level settings of Ray Serve and its HAProxy, applied before they start."""
