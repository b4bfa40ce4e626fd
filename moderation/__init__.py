"""Classifiers, policy, training, evaluation and the model registry; the use cases the service runs.

No Flask and no Celery here: functions take a session (or plain values) and never commit it.
"""
