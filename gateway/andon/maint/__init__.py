"""Maintenance tools: board hardware profiles, provisioning and flashing."""
