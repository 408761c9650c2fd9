"""Pieces shared by the web apps (``acfd serve``, ``acfd annotate``) that are not about either one:
request-body limits (:mod:`acfd.web.uploads`). Depends on Starlette only."""
