"""What every test needs. The e2e fixtures (the session's single local Ray and the API
client on it) are in tests/e2e/conftest.py; shared helpers in tests/e2e/support.py."""

from __future__ import annotations

import os

# The bundled models load from their packages; nothing may reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
