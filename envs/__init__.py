"""Tasks, wrappers, scripted experts and demo datasets."""

# gymnasium-robotics prints a notice about the Adroit v1 reward change to stderr on every import,
# which floods per-run logs. The README states that notice once (Adroit section); the versions of
# every package are recorded in each run's config.json.
try:  # pragma: no cover - depends on the installed version
    import farama_notifications

    farama_notifications.notifications.pop("gymnasium_robotics", None)
except ImportError:
    pass
