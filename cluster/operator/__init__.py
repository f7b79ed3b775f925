"""The operator: one detached actor that makes Serve and Ray Jobs match the registry.

- ``actor``: the ``Operator`` actor and its reconcile loop.
- ``reconcile``: the pure plan of each tick (desired vs actual, deploy and delete tasks).
- ``rollout``: the pure state machine of a version swap, stepped every tick.
- ``serve_gateway``: the calls that change Serve (build, deploy, delete an app).
- ``serve_state``: how Serve's apps and Ray's resources are read (``AppState``, allocation).
- ``capacity``: what replicas need, what is short, and every message about missing capacity.
"""
