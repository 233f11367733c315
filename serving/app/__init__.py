"""The Ray Serve application: its graph, its deployments, and the gateway that deploys it."""
