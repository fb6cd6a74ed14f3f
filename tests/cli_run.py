"""Running the ``amsim`` command line in-process, for the tests of its commands."""

import pytest

from amsim import cli


def run(argv, capsys):
    """Run ``amsim ARGV`` in-process: (exit status, stdout, stderr)."""
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    except Exception as exc:  # noqa: BLE001 - the command line must never let one escape
        pytest.fail(f"amsim {' '.join(argv)} raised {exc!r} instead of exiting with one line on stderr")
    out, err = capsys.readouterr()
    return rc, out, err
