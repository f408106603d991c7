"""syzbot bugs from the dashboard: the JSON format and the choices
(:mod:`~kvmlab.syzbot.model`, pure), HTTP (:mod:`~kvmlab.syzbot.client`), and
the bug directory in kvmlab's cache (:mod:`~kvmlab.syzbot.fetch`)."""
