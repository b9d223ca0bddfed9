"""Expected failures: the CLI turns these into one line on stderr and a non-zero exit."""


class EchoEdgeError(Exception):
    """A failure caused by input or environment (bad file, wrong config), not by a bug.

    The message must name the file (and row, where there is one) and the problem in one line.
    """

    exit_code = 2


class DataError(EchoEdgeError):
    """A dataset file is missing, unreadable or malformed."""


class CheckpointError(EchoEdgeError):
    """A checkpoint is corrupt, of another config, or otherwise unusable."""


class ShapeError(EchoEdgeError):
    """An input tensor does not match the ClipSpec the model was built for."""


class PlatformError(EchoEdgeError):
    """This host cannot run the artefact (e.g. Core ML prediction off macOS); not a defect of it."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if empty), for one-line errors."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]
