"""The process adapters: the ``hookline`` command, the Huey queue and its tasks, the reaper thread, the servers.

The only package that imports ``web`` or ``huey``: the arrows run core <- store/service <- web <- app
(tests/test_architecture.py checks every import, lazy ones included). ``runtime.build_runtime`` is the
composition root each process builds once from its Settings.
"""
