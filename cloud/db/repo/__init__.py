"""Repositories: every query the services run, as typed functions over a ``Session``.

Open the session with ``earwitness.cloud.db.engine.transaction`` (or the web app's
``SessionDep``); nothing outside ``earwitness.cloud.db`` writes SQL. MySQL/SQLite
differences live in ``earwitness.cloud.db.dialect``.
"""
