"""The composition root: settings from the environment, the app factory, the Celery entry and the CLI."""
