"""The predict path, in call order: the Serve app (``app``), the front door (``door``: key
and body size), the predict route and service, routing (traffic split), the batcher, the
replica call, and the counters behind ``/metrics``. The async worker, which runs queued
predictions through the same service, lives here too."""
