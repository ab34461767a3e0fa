"""The web UI: server-rendered pages (Jinja2, hand-written CSS and a little JavaScript,
nothing from another site) under ``/web``, mounted into the ``tipline serve`` app.
Pages call services (``services/web_auth``, ``services/review``), never the store."""
