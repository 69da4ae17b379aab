"""Reporting helpers shared by the demo and the study tools."""
