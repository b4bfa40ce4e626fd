"""The broker's queues, named apart from the Celery app so the CLI can offer them without importing Celery.

Callbacks have their own queue, so that a site hears about a decision while a backlog of new comments waits:
a worker takes from its queues in turn (kombu's Redis transport rotates the queues it pops), so a callback
waits for about one task per worker process rather than for the whole backlog. Scheduled retraining has its
own too, so that an operator can keep its minutes of CPU off the hosts that classify
(`moderation worker --queues training` on one host, `--queues moderation,callbacks` on the others). A worker
started without `--queues` takes all three; every queue needs a worker somewhere.
"""

CLASSIFY_QUEUE = "moderation"  # classify, the outbox relay and housekeeping
CALLBACK_QUEUE = "callbacks"  # notify (send decisions to the sites) and the callback retry loop
TRAINING_QUEUE = "training"  # scheduled retraining (off unless RETRAIN_INTERVAL_HOURS is set)
WORKER_QUEUES = (CLASSIFY_QUEUE, CALLBACK_QUEUE, TRAINING_QUEUE)
