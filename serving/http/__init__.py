"""The HTTP surface: our game API, the Open Inference Protocol v2, errors."""
