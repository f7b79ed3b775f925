"""The operator: one detached actor that reconciles the registry with Serve and Ray Jobs
(``actor``), steps rollouts (``rollout``), and talks to Serve (``serve``)."""
