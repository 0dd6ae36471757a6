"""The DeRa web demo. Run `python app.py`; host and port come from GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT (default 127.0.0.1:7860). Other settings are listed in the README."""

import logging
import os

from dera_demo.models import configure_threads
from dera_demo.service import Backend
from dera_demo.ui import build_app, launch


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    configure_threads()
    backend = Backend.from_env()
    backend.pair()  # load before serving, so the first visitor does not wait for it
    launch(
        build_app(backend),
        concurrency=int(os.environ.get("DERA_CONCURRENCY", "1")),
        queue_size=int(os.environ.get("DERA_QUEUE_SIZE", "16")),
    )


if __name__ == "__main__":
    main()
