"""Metrics files, CSV curves and PNG plots."""
