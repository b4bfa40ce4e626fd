"""`python -m examples.site`: serve the example article site on EXAMPLE_PORT (default 8001)."""

import os
import sys

from werkzeug import serving

from examples.site import create_app

if __name__ == "__main__":
    # werkzeug colours its lines whatever the stream: `make run` sends them to var/log/example-site.log, where
    # escape codes are noise. werkzeug has no public switch for it.
    serving._log_add_style = sys.stderr.isatty()
    serving.run_simple(
        os.environ.get("EXAMPLE_HOST", "127.0.0.1"),
        int(os.environ.get("EXAMPLE_PORT", "8001")),
        create_app(),
        threaded=True,
    )
