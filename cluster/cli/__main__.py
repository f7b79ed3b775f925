"""``python -m cluster.cli``: the ``modelyard`` command without its console script."""

from cluster.cli import main

main()
