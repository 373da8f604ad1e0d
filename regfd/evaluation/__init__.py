"""Measuring detection and decisions on a labelled corpus (`regfd evaluate`)."""
