# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Console-script entry of ``kron-compress``: a top-level module, so that importing it does not import
``kron_transformers`` (whose ``__init__`` imports torch and Transformers and registers the Kronecker classes with the
Auto classes, several seconds of start-up). A Ctrl-C, SIGTERM or SIGHUP during those imports prints one line and exits
with ``128 + signal number`` instead of an import traceback; once ``kron_transformers.cli.main`` runs, it handles the
signals itself (see its docstring).
"""

import signal
import sys


PROG = "kron-compress"
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _StartupInterrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise _StartupInterrupted(signum)


def main(argv=None) -> int:
    previous = {}
    try:
        previous = {signum: signal.signal(signum, _raise_interrupted) for signum in _SIGNALS}
        from kron_transformers.cli import main as cli_main
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"{PROG}: interrupted ({signal.Signals(signum).name}) while starting; nothing was written",
              file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
