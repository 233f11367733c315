"""The Open Inference Protocol v2 over gRPC (KServe's and Triton's ``GRPCInferenceService``).

Served from inside each ingress replica, on its own port, over the same data
plane as HTTP: the same validation, canary routing, deadlines and fallbacks.
"""
