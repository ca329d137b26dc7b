"""Deployment recipes (nginx, systemd, Procfile) and make demo-cluster."""
