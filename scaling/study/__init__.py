"""``scaling study``: a whole scaling study in one command (data, teacher, sweep with probes, report)."""
