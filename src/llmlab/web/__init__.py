"""Web pages served by `llmlab serve`: the chat page at `/` (and, as they land, the notes browser
and the interview coach). Static files live in `web/static/` (no build step, no CDN; the two
vendored libraries, marked and DOMPurify, carry their licences in `static/vendor/`).

    from llmlab.web import mount_web
    mount_web(app)          # after serve.app.create_app(...)
"""

from llmlab.web.routes import mount_web

__all__ = ["mount_web"]
