"""`python -m examples.site`: serve the example article site on EXAMPLE_PORT (default 8001)."""

import os

from werkzeug.serving import run_simple

from examples.site import create_app

if __name__ == "__main__":
    run_simple(
        os.environ.get("EXAMPLE_HOST", "127.0.0.1"),
        int(os.environ.get("EXAMPLE_PORT", "8001")),
        create_app(),
        threaded=True,
    )
