"""Interactive sessions: one VM booted by hand (``kvmlab boot``), named and
listed (``kvmlab ps``), reached by ``kvmlab ssh``/``scp``, ended by
``kvmlab kill``.

- :mod:`kvmlab.session.store` — session directories and their records, names, liveness.
- :mod:`kvmlab.session.terminal` — raw terminal, the Ctrl-A escape, the monitor's line editor.
- :mod:`kvmlab.session.vm` — a session's VM: start, crash flagging, guest setup, close.
- :mod:`kvmlab.session.foreground` — the console in the foreground, and ``-- CMD`` runs.
"""
