"""Loaded by the CLI under test when PYTHONPATH includes this folder: swaps in a scripted tenant runtime.

Only active with COLLECTOR_FAKE_RUNTIME=1, so the real runtime stays the default everywhere else.
"""

import os
import sys

if os.environ.get("COLLECTOR_FAKE_RUNTIME") == "1":
    import fake_tenant_runtime

    sys.modules["supervisor.children.runtime"] = fake_tenant_runtime
