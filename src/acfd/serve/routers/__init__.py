"""The service's routes: detection (``/v1``), health (``/healthz``), pages (``/``, ``/docs``)."""
