"""Expected failures: the CLI turns these into one line on stderr and a non-zero exit."""


class EchoEdgeError(Exception):
    """A failure caused by input or environment (bad file, wrong config), not by a bug.

    The message must name the file (and row, where there is one) and the problem in one line.
    """

    exit_code = 2

    def __init__(self, *args: object) -> None:
        # The message reaches the user as one line; a cell or a file name quoted into it may
        # carry a newline (a quoted CSV field can), which would split that line.
        if args and isinstance(args[0], str):
            args = (one_line(args[0]), *args[1:])
        super().__init__(*args)


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


def one_line(text: str) -> str:
    """`text` with every line break (all that str.splitlines knows) written as an escape."""
    if len(text.splitlines()) <= 1 and not text.endswith(("\n", "\r")):
        return text
    return "".join(repr(c)[1:-1] if c.splitlines() != [c] else c for c in text)
