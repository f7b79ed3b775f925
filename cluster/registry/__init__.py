"""The registry: one detached actor holding models, deployments, tasks and the async queue,
persisted in SQLite (``store``); ``actor`` is the actor, the other modules its stores."""
