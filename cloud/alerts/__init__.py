"""Alerts: correlation rules over committed detections, alert rows, notifications."""
