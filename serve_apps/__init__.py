"""What runs inside model replicas: the generic ``ModelServer`` and the model kinds it loads."""
