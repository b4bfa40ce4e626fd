"""The broker's queues, named apart from the Celery app so the CLI can offer them without importing Celery.

Two queues, so that a site hears about a decision while a backlog of new comments waits: a worker takes
from both in turn (kombu's Redis transport rotates the queues it pops), so a callback waits for about one
task per worker process rather than for the whole backlog. An operator can also run workers for one queue
alone (`moderation worker --queues callbacks`); every queue needs a worker somewhere.
"""

CLASSIFY_QUEUE = "moderation"  # classify, the outbox relay and housekeeping
CALLBACK_QUEUE = "callbacks"  # notify (send decisions to the sites) and the callback retry loop
WORKER_QUEUES = (CLASSIFY_QUEUE, CALLBACK_QUEUE)
