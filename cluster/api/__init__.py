"""HTTP routes, one module per resource. Each route parses, calls the control plane, returns."""
