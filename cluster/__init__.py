"""modelyard control plane: settings, schemas, registry, operator, ingress, client and CLI."""

__version__ = "0.1.0"
