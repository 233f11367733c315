"""Canary rollouts: pre-flight gates, staged traffic, measured decisions."""
