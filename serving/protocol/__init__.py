"""What every transport shares: v2 handlers, tensors, errors, keys and a call's terms.

HTTP (``serving/http``) and gRPC (``serving/rpc``) import this room and never
each other; it imports neither of them, nor any web or RPC framework.
"""
