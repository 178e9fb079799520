"""A managed block in a login profile (~/.zprofile, ~/.profile) whose lines appear exactly once.

The guide appends `eval "$(/opt/homebrew/bin/brew shellenv)"` to ~/.zprofile by hand. A user who did that
before the toolkit ran already has the line: adding a block that repeats it would run it twice, so a line
already present outside the block is left where it is (it is the user's) and not repeated inside it.
"""

BEGIN = "# BEGIN sdenv managed block: {name}"
END = "# END sdenv managed block: {name}"
COMMENT = "# Written by the sdenv toolkit; edit settings.yml and provision again instead of editing here."


class ProfileError(Exception):
    """A profile whose markers are broken; the message says what to fix."""


def split_block(text, name):
    """-> (before_lines, block_lines or None, after_lines) for the block called `name`."""
    lines = text.splitlines()
    begin, end = BEGIN.format(name=name), END.format(name=name)
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if not starts and not ends:
        return lines, None, []
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ProfileError(
            f"The profile has {len(starts)} begin and {len(ends)} end markers of the sdenv block {name!r}"
            " (expected one of each, in order): remove the broken markers, then provision again."
        )
    return lines[: starts[0]], lines[starts[0] + 1 : ends[0]], lines[ends[0] + 1 :]


def render(text, name, wanted_lines):
    """The profile text with the block holding exactly the wanted lines not already written by the user.

    Returns (new_text, lines_left_to_the_user). Text outside the block is kept byte for byte.
    """
    before, _, after = split_block(text, name)
    outside = {line.strip() for line in before + after}
    user_has = [line for line in wanted_lines if line.strip() in outside]
    keep = [line for line in wanted_lines if line.strip() not in outside]
    body = before + after
    if keep:
        block = [BEGIN.format(name=name), COMMENT, *keep, END.format(name=name)]
        # The block goes at the end, after a blank line, as the guide's `(echo; echo ...) >>` does.
        if before and before[-1].strip():
            block.insert(0, "")
        body = before + block + after
    new_text = "\n".join(body) + ("\n" if body else "")
    return new_text, user_has


def count_lines(text, line):
    """How many times `line` occurs as a whole line (the idempotence check of the tests)."""
    return sum(1 for candidate in text.splitlines() if candidate.strip() == line.strip())
