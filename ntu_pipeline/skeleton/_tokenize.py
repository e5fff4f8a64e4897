"""The compiled pass behind `skeleton.parse_skeleton_bytes`: the bytes of a `.skeleton` file -> arrays.

    text = np.empty(padded_size(len(data)), np.uint8)
    text[: len(data)] = np.frombuffer(data, np.uint8)
    scan = scan_skeleton(text, len(data))
    scan.error[0] == OK, or an error code with its line, what the line was, and the offending token

Why numba: the work is a pass over ~270 kB of text per file, ~33,000 numbers. NumPy has no fast
text-to-float conversion (`np.fromstring(text, sep=" ")` alone takes half the time of a plain Python
parse), so the pass is compiled. It runs in two steps:

1. `_masks`: one bit per byte says "a token starts here" and one "a line ends here", 64 bytes to a
   word (the compiler vectorises this loop). Walking set bits takes the per-byte branches, which
   mispredict at every token end, out of the parse.
2. `scan_skeleton` walks the layout (frame count; per frame a body count; per body a body line, a
   joint count and 25 joint lines): the next line-end bit closes the line, and the token-start bits
   before it are its fields. Each number is read from its known start, so successive numbers do not
   wait on one another.

Numbers: a token [+-]digits[.digits] of 1 to 15 digits is converted exactly (the mantissa and the
power of ten are exact doubles, and one IEEE division rounds correctly: the same double as Python's
`float`). Other well-formed tokens (exponent form, more digits) go to `_parse_number_slow`, exact
within 18 digits and decimal exponents of +-22; anything past that is listed in `fixups` for the
caller to convert with `float`. So every value equals `float(token)` rounded to float32. bodyID is
read as an unsigned 64-bit integer. nan, inf and hexadecimal are not numbers here: the Kinect SDK
never writes them.

`cache=True` keeps the machine code in `__pycache__`: the first process ever compiles (~10 s), later
ones load it (~0.2 s).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

# error = (code, line, context, found, token start, token end); codes in error[0] (for BAD_TOKEN,
# `found` is the 0-based field of the token on its line):
OK, END_OF_FILE, FIELD_COUNT, BAD_TOKEN, JOINT_COUNT, TRAILING_DATA = range(6)
# what line error[1] (1-based) should have been, in error[2]:
FRAME_COUNT_LINE, BODY_COUNT_LINE, BODY_LINE, JOINT_COUNT_LINE, JOINT_LINE = range(5)
# how `_parse_number_slow` read a token:
EXACT, NEEDS_FIXUP, MALFORMED = range(3)
# the output a fixup row refers to, in fixups[:, 0]:
TO_BODY_INFO, TO_JOINTS = 0, 1

NUM_JOINTS = 25
BODY_VALUES = 9  # body line fields after bodyID
JOINT_VALUES = 12
LINES_PER_BODY = 2 + NUM_JOINTS  # body line, joint count, joint lines

_BLOCK = 64  # bytes per mask word
_POW10 = np.array([10.0**k for k in range(23)])  # all exact in float64
_MAX_COUNT = 1 << 40  # counts are capped here while read, so a huge one cannot overflow
_U1 = np.uint64(1)
_U63 = np.uint64(63)


@njit(cache=True)
def padded_size(n):
    """The bytes `scan_skeleton` needs for a file of n bytes: >= 64 more, in whole 64-byte words."""
    return (n // _BLOCK + 2) * _BLOCK


class Scan(NamedTuple):
    """The kernel's output; rows past num_rows (and frames past num_frames) are not filled."""

    num_frames: int
    bodies_per_frame: np.ndarray  # (>= num_frames,) int32
    num_rows: int
    frame: np.ndarray  # (>= num_rows,) int32
    body_id: np.ndarray  # (>= num_rows,) uint64
    body_info: np.ndarray  # (>= num_rows * 9,) float32
    joints: np.ndarray  # (>= num_rows * 300,) float32
    fixups: np.ndarray  # (num_fixups, 5) int64: output, flat index, token start, token end, line
    error: np.ndarray  # (6,) int64, see the error codes above


@njit(cache=True, inline="always")
def _is_separator(c):
    """Blank (space, \\t, \\v, \\f, \\r) or line end (\\n); every other byte is part of a token."""
    return (c == 32) | (np.uint8(c - 9) < 5)


@njit(cache=True, inline="always")
def _is_digit(c):
    return (c >= 48) & (c <= 57)


@njit(cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> _U1) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True, error_model="numpy")
def _masks(text, n):
    """(token starts, line ends, number of lines) of text[:n]; text is padded with line ends.

    In the masks, bit j of word b is byte 64 b + j. Line ends are the line feeds before n, then n
    itself (the end of the last line, with or without a final line feed). A last word holds one
    sentinel bit of each, past the padding, so that a walk over set bits always stops.
    """
    blocks = text.size // _BLOCK
    starts = np.empty(blocks + 1, np.uint64)
    ends = np.empty(blocks + 1, np.uint64)
    carry = _U1  # byte -1 counts as a separator
    for b in range(blocks):
        separator = np.uint64(0)
        line_end = np.uint64(0)
        base = b * _BLOCK
        for j in range(_BLOCK):
            c = text[base + j]
            separator |= np.uint64(_is_separator(c)) << np.uint64(j)
            line_end |= np.uint64(c == 10) << np.uint64(j)
        starts[b] = ~separator & ((separator << _U1) | carry)
        carry = separator >> _U63
        ends[b] = line_end
    ends[n // _BLOCK] &= (np.uint64(2) << np.uint64(n % _BLOCK)) - _U1  # of the padding, only n
    ends[n // _BLOCK + 1 :] = 0
    lines = 0
    for b in range(n // _BLOCK + 1):
        lines += _popcount(ends[b])
    starts[blocks] = _U1
    ends[blocks] = _U1
    return starts, ends, lines


@njit(cache=True, inline="always")
def _next_bit(masks, block, bits):
    """The lowest set bit at or after the cursor (block, bits): (block, bits, its byte position)."""
    while bits == 0:
        block += 1
        bits = masks[block]
    return block, bits, block * _BLOCK + np.int64(trailing_zeros(bits))


@njit(cache=True, inline="always", error_model="numpy")
def _parse_number_fast(text, pos):
    """(value, ok) for the token at pos when it is [+-]digits[.digits] with 1 to 15 digits.

    Then the mantissa (< 10**15) and the power of ten are exact doubles, so one IEEE division rounds
    correctly. Indexes are unsigned so that numba leaves out its negative-index wraparound; text is
    padded, so no read needs a bounds check. (Small changes to this function move the parse time by
    10-20%: measure before touching it.)
    """
    c = text[np.uint64(pos)]
    negative = c == 45  # -
    pos += negative or c == 43  # +
    mantissa = 0
    first = pos
    while True:
        c = text[np.uint64(pos)]
        if c < 48 or c > 57:
            break
        mantissa = mantissa * 10 + (c - 48)
        pos += 1
    digits = pos - first
    fraction = 0
    if text[np.uint64(pos)] == 46:  # .
        pos += 1
        first = pos
        while True:
            c = text[np.uint64(pos)]
            if c < 48 or c > 57:
                break
            mantissa = mantissa * 10 + (c - 48)
            pos += 1
        fraction = pos - first
    ok = (digits + fraction > 0) & (digits + fraction < 16) & _is_separator(text[np.uint64(pos)])
    value = mantissa / _POW10[np.uint64(min(fraction, 22))]  # (when ok, fraction < 16)
    return (-value if negative else value), ok


@njit(cache=True, error_model="numpy")
def _parse_number_slow(text, pos):
    """(value, token end, status) for [+-]digits[.digits][(e|E)[+-]digits] with at least one digit.

    Status EXACT, NEEDS_FIXUP (well formed but past the exact path: the value is then approximate,
    and the caller converts the token with Python's float) or MALFORMED.
    """
    negative = text[pos] == 45
    if negative or text[pos] == 43:
        pos += 1
    mantissa = 0
    digits = 0
    scale = 0
    while _is_digit(text[pos]):
        mantissa = mantissa * 10 + (text[pos] - 48)  # wraps past 18 digits: NEEDS_FIXUP then
        digits += 1
        pos += 1
    if text[pos] == 46:
        pos += 1
        while _is_digit(text[pos]):
            mantissa = mantissa * 10 + (text[pos] - 48)
            digits += 1
            scale -= 1
            pos += 1
    status = EXACT if digits > 0 else MALFORMED
    if text[pos] == 101 or text[pos] == 69:  # e E
        pos += 1
        exp_negative = text[pos] == 45
        if exp_negative or text[pos] == 43:
            pos += 1
        first = pos
        exponent = 0
        while _is_digit(text[pos]):
            exponent = min(exponent * 10 + (text[pos] - 48), 100000)
            pos += 1
        if pos == first:
            status = MALFORMED
        scale += -exponent if exp_negative else exponent
    if not _is_separator(text[pos]):  # the token goes on: not a number
        return 0.0, _token_end(text, pos), MALFORMED
    if status == MALFORMED:
        return 0.0, pos, status
    value = float(mantissa)
    if digits <= 18 and mantissa <= (1 << 53) and -22 <= scale <= 22:
        value = value * _POW10[scale] if scale >= 0 else value / _POW10[-scale]
    else:
        status = NEEDS_FIXUP
    return (-value if negative else value), pos, status


@njit(cache=True)
def _token_end(text, pos):
    while not _is_separator(text[pos]):
        pos += 1
    return pos


@njit(cache=True)
def _next_token(text, pos):
    """The start of the next token on the line, from pos (the end of the previous one)."""
    while text[pos] != 10 and _is_separator(text[pos]):
        pos += 1
    return pos


@njit(cache=True)
def _parse_count(text, start):
    """(value, ok) for a non-negative decimal integer token; values above _MAX_COUNT are capped."""
    end = _token_end(text, start)
    value = 0
    for i in range(start, end):
        if not _is_digit(text[i]):
            return 0, False
        value = min(value * 10 + (text[i] - 48), _MAX_COUNT)
    return value, True


@njit(cache=True)
def _parse_body_id(text, start):
    """(value, ok) for an unsigned 64-bit decimal integer token, without going through a float."""
    end = _token_end(text, start)
    value = np.uint64(0)
    limit = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(start, end):
        if not _is_digit(text[i]):
            return np.uint64(0), False
        digit = np.uint64(text[i] - 48)
        if value > (limit - digit) // np.uint64(10):
            return np.uint64(0), False
        value = value * np.uint64(10) + digit
    return value, True


@njit(cache=True, error_model="numpy")
def _read_line_slow(text, pos, line, context, out, offset, which, count, fixups, num_fixups, error):
    """Read `count` numbers from the token at pos on into out[offset:], listing those that need a fixup.

    For the body lines, and for joint lines with a token off the fast path. Returns (fixups,
    num_fixups); records a token that is not a number in `error`.
    """
    for j in range(count):
        number, end, status = _parse_number_slow(text, pos)
        if status == MALFORMED:
            _fail(error, BAD_TOKEN, line, context, j + (context == BODY_LINE), pos, end)
            break
        out[offset + j] = number
        if status == NEEDS_FIXUP:
            if num_fixups == fixups.shape[0]:
                fixups = np.concatenate((fixups, np.empty_like(fixups)))
            fixups[num_fixups] = (which, offset + j, pos, end, line)
            num_fixups += 1
        pos = _next_token(text, end)
    return fixups, num_fixups


@njit(cache=True)
def _fail(error, code, line, context, found=0, start=0, end=0):
    error[0] = code
    error[1] = line
    error[2] = context
    error[3] = found
    error[4] = start
    error[5] = end


@njit(cache=True, inline="always")
def _line(starts, sb, sbits, ends, eb, ebits):
    """Take the next line: (its first token's start, its field count, its end, the two cursors)."""
    eb, ebits, end = _next_bit(ends, eb, ebits)
    ebits &= ebits - _U1
    sb, sbits, token = _next_bit(starts, sb, sbits)
    first = token
    fields = 0
    while token < end:
        fields += 1
        sbits &= sbits - _U1
        sb, sbits, token = _next_bit(starts, sb, sbits)
    return first, fields, end, sb, sbits, eb, ebits


@njit(cache=True)
def _fail_fields(error, n, line, context, fields, first):
    """Record that a line has the wrong number of fields: an error, or the end of the file."""
    if fields == 0 and first >= n:
        _fail(error, END_OF_FILE, line, context)
    else:
        _fail(error, FIELD_COUNT, line, context, fields)


@njit(cache=True, nogil=True, error_model="numpy")
def scan_skeleton(text, n):
    """Parse the file in text[:n]; see `Scan` for the outputs and the error codes.

    text must have room for padding (`padded_size(n)` bytes at least): the bytes past n are
    overwritten with line ends, so that reads need no bounds checks.
    """
    size = padded_size(n)
    if text.size < size:
        raise ValueError("scan_skeleton: text has no room for its padding")
    text = text[:size]
    text[n:] = 10
    starts, ends, lines = _masks(text, n)
    sb, sbits, eb, ebits = 0, starts[0], 0, ends[0]  # cursors: the next token start, line end
    error = np.zeros(6, np.int64)
    max_rows = lines // LINES_PER_BODY + 1
    frame = np.empty(max_rows, np.int32)
    body_id = np.empty(max_rows, np.uint64)
    body_info = np.empty(max_rows * BODY_VALUES, np.float32)
    joints = np.empty(max_rows * NUM_JOINTS * JOINT_VALUES, np.float32)
    fixups = np.empty((8, 5), np.int64)
    num_fixups = 0
    rows = 0
    line = 0  # 1-based number of the line last taken

    # count lines (frame count, body count, joint count) hold one non-negative integer
    line += 1
    first, fields, end, sb, sbits, eb, ebits = _line(starts, sb, sbits, ends, eb, ebits)
    num_frames = 0
    if fields != 1:
        _fail_fields(error, n, line, FRAME_COUNT_LINE, fields, first)
    else:
        num_frames, ok = _parse_count(text, first)
        if not ok:
            _fail(error, BAD_TOKEN, line, FRAME_COUNT_LINE, 0, first, _token_end(text, first))
            num_frames = 0
    # every frame takes at least one byte, so a file of n bytes holds fewer than n frames
    bodies_per_frame = np.zeros(min(num_frames, n), np.int32)
    for f in range(num_frames):
        line += 1
        first, fields, end, sb, sbits, eb, ebits = _line(starts, sb, sbits, ends, eb, ebits)
        if fields != 1:
            _fail_fields(error, n, line, BODY_COUNT_LINE, fields, first)
            break
        count, ok = _parse_count(text, first)
        if not ok:
            _fail(error, BAD_TOKEN, line, BODY_COUNT_LINE, 0, first, _token_end(text, first))
            break
        for _body in range(count):
            if rows == max_rows:  # unreachable (each row takes 27 lines), but writes must stay in bounds
                _fail(error, END_OF_FILE, line + 1, BODY_LINE)
                break
            # body line: bodyID, then 9 numbers (few lines: read token by token)
            line += 1
            first, fields, end, sb, sbits, eb, ebits = _line(starts, sb, sbits, ends, eb, ebits)
            if fields != 1 + BODY_VALUES:
                _fail_fields(error, n, line, BODY_LINE, fields, first)
                break
            value, ok = _parse_body_id(text, first)
            if not ok:
                _fail(error, BAD_TOKEN, line, BODY_LINE, 0, first, _token_end(text, first))
                break
            body_id[rows] = value
            frame[rows] = f
            fixups, num_fixups = _read_line_slow(
                text, _next_token(text, _token_end(text, first)), line, BODY_LINE, body_info,
                rows * BODY_VALUES, TO_BODY_INFO, BODY_VALUES, fixups, num_fixups, error,
            )
            if error[0] != OK:
                break
            # joint count line
            line += 1
            first, fields, end, sb, sbits, eb, ebits = _line(starts, sb, sbits, ends, eb, ebits)
            if fields != 1:
                _fail_fields(error, n, line, JOINT_COUNT_LINE, fields, first)
                break
            joint_count, ok = _parse_count(text, first)
            if not ok:
                _fail(error, BAD_TOKEN, line, JOINT_COUNT_LINE, 0, first, _token_end(text, first))
                break
            if joint_count != NUM_JOINTS:
                _fail(error, JOINT_COUNT, line, JOINT_COUNT_LINE, joint_count)
                break
            # 25 joint lines of 12 numbers: the hot loop, inline with its cursors in registers
            offset = rows * NUM_JOINTS * JOINT_VALUES
            for _joint in range(NUM_JOINTS):
                line += 1
                eb, ebits, end = _next_bit(ends, eb, ebits)
                ebits &= ebits - _U1
                sb, sbits, token = _next_bit(starts, sb, sbits)
                first = token
                fields = 0
                fast = True
                while token < end:
                    if fields < JOINT_VALUES:
                        number, ok = _parse_number_fast(text, token)
                        joints[np.uint64(offset + fields)] = number
                        fast &= ok
                    fields += 1
                    sbits &= sbits - _U1
                    sb, sbits, token = _next_bit(starts, sb, sbits)
                if fields != JOINT_VALUES:
                    _fail_fields(error, n, line, JOINT_LINE, fields, first)
                    break
                if not fast:  # rare: read the line again, token by token
                    fixups, num_fixups = _read_line_slow(
                        text, first, line, JOINT_LINE, joints, offset, TO_JOINTS, JOINT_VALUES, fixups,
                        num_fixups, error,
                    )
                    if error[0] != OK:
                        break
                offset += JOINT_VALUES
            if error[0] != OK:
                break
            rows += 1
        if error[0] != OK:
            break
        bodies_per_frame[f] = count
    if error[0] == OK:
        # after the last frame only blanks and line ends may follow
        sb, sbits, token = _next_bit(starts, sb, sbits)
        if token < n:
            end = -1
            while end < token:
                line += 1
                eb, ebits, end = _next_bit(ends, eb, ebits)
                ebits &= ebits - _U1
            _fail(error, TRAILING_DATA, line, 0, 0, token, end)
    return Scan(
        num_frames, bodies_per_frame, rows, frame, body_id, body_info, joints, fixups[:num_fixups], error,
    )
