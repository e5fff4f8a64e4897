"""`parse_skeleton`: conformance on the real NTU files, and edge cases written in tmp_path.

The oracle is a plain line-by-line reading of the text in this file (`_plain_read`), independent of
the compiled kernel: every field must come out as `float(token)` rounded to float32, bodyIDs as
`int(token)`.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from ntu_pipeline.errors import SkeletonFormatError
from ntu_pipeline.skeleton.parse import (
    BODY_FIELDS,
    JOINT_FIELDS,
    NUM_JOINTS,
    SkeletonRecord,
    parse_skeleton,
    parse_skeleton_bytes,
)


def _plain_read(data: bytes) -> list[list[tuple[list[str], list[list[str]]]]]:
    """frames -> bodies -> (body line tokens, 25 joint line token lists), read line by line."""
    lines = iter(data.decode().splitlines())
    frames = []
    for _ in range(int(next(lines))):
        bodies = []
        for _ in range(int(next(lines))):
            info = next(lines).split()
            assert int(next(lines)) == NUM_JOINTS
            bodies.append((info, [next(lines).split() for _ in range(NUM_JOINTS)]))
        frames.append(bodies)
    return frames


def _assert_matches_plain_reading(record: SkeletonRecord, data: bytes, frames=None) -> None:
    frames = _plain_read(data) if frames is None else frames
    bodies = [body for frame in frames for body in frame]
    assert record.num_frames == len(frames)
    np.testing.assert_array_equal(record.bodies_per_frame, [len(f) for f in frames])
    np.testing.assert_array_equal(record.frame, [i for i, f in enumerate(frames) for _ in f])
    assert record.body_id.dtype == np.uint64
    assert record.body_id.tolist() == [int(info[0]) for info, _ in bodies]
    want_info = np.array([[float(v) for v in info[1:]] for info, _ in bodies], np.float64)
    want_joints = np.array([[[float(v) for v in j] for j in joints] for _, joints in bodies])
    assert record.body_info.dtype == record.joints.dtype == np.float32
    assert record.body_info.shape == (len(bodies), len(BODY_FIELDS) - 1)
    assert record.joints.shape == (len(bodies), NUM_JOINTS, len(JOINT_FIELDS))
    # float(token) rounded once to float32: the parse is exact, not merely close
    np.testing.assert_array_equal(record.body_info, want_info.astype(np.float32).reshape(-1, 9))
    np.testing.assert_array_equal(record.joints, want_joints.astype(np.float32).reshape(-1, 25, 12))


# --- the real files ---------------------------------------------------------------------------


def test_every_real_file_matches_a_plain_reading(ntu_samples):
    paths = sorted((ntu_samples / "skeletons").glob("*.skeleton"))
    assert len(paths) >= 10
    for path in paths:
        record = parse_skeleton(path)
        assert record.source == str(path)
        _assert_matches_plain_reading(record, path.read_bytes())


def test_two_performers_whose_body_ids_differ_in_the_last_digits(ntu_samples):
    path = ntu_samples / "skeletons" / "S017C003P020R002A054.skeleton"
    tokens = {line.split()[0] for line in path.read_text().splitlines() if len(line.split()) == 10}
    assert len(tokens) == 2
    a, b = sorted(tokens)
    assert a[:-2] == b[:-2] and int(a) > 2**53  # beyond exact float64: a float read would not do
    ids = parse_skeleton(path).body_id
    assert sorted(set(ids.tolist())) == [int(a), int(b)]
    assert int(float(a)) != int(a) and int(float(b)) != int(b)  # so the test means something


def test_crlf_copy_gives_identical_arrays(ntu_samples):
    lf = parse_skeleton(ntu_samples / "skeletons" / "S001C001P001R001A001.skeleton")
    crlf_path = ntu_samples / "variants" / "S001C001P001R001A001.crlf.skeleton"
    assert b"\r\n" in crlf_path.read_bytes()
    crlf = parse_skeleton(crlf_path)
    assert crlf.num_frames == lf.num_frames
    for name in ("bodies_per_frame", "frame", "body_id", "body_info", "joints"):
        np.testing.assert_array_equal(getattr(crlf, name), getattr(lf, name), err_msg=name)


def test_real_file_with_a_13_field_joint_line(ntu_samples):
    path = ntu_samples / "bad" / "S001C001P001R001A002.13-field-joint-line.skeleton"
    lines = path.read_text().splitlines()
    bad_line = next(i + 1 for i, line in enumerate(lines) if len(line.split()) == 13)
    with pytest.raises(SkeletonFormatError) as caught:
        parse_skeleton(path)
    err = caught.value
    assert err.line == bad_line
    assert err.path == str(path) and str(path) in str(err)
    assert err.expected == "12 fields in a joint line" and err.found == "13 fields"


# --- synthetic files --------------------------------------------------------------------------


def _lines(bodies_per_frame, seed=0) -> list[str]:
    """The lines of a valid file, numbers written the way the Kinect SDK writes them."""
    rng = np.random.default_rng(seed)
    lines = [str(len(bodies_per_frame))]
    for frame, count in enumerate(bodies_per_frame):
        lines.append(str(count))
        for b in range(count):
            body_id = 72057594037937917 + 42 * b + frame % 2  # > 2**53, as in the real files
            lean = rng.normal(size=2)
            lines.append(f"{body_id} 0 1 1 0 1 0 {lean[0]:.7g} {lean[1]:.8g} 2")
            lines.append(str(NUM_JOINTS))
            for _ in range(NUM_JOINTS):
                xyz = rng.normal(size=3) * [0.5, 0.5, 3]
                pix = rng.uniform(0, 1920, size=4)
                quat = rng.normal(size=4) * 1e-3 ** rng.integers(0, 2)
                numbers = [*(f"{v:.7g}" for v in [*xyz, *pix, *quat]), str(rng.integers(0, 3))]
                lines.append(" ".join(numbers))
    return lines


def _write(tmp_path, lines, newline="\n", final=True, name="S001C001P001R001A001.skeleton"):
    path = tmp_path / name
    path.write_bytes((newline.join(lines) + (newline if final else "")).encode())
    return path


def _error(path) -> SkeletonFormatError:
    with pytest.raises(SkeletonFormatError) as caught:
        parse_skeleton(path)
    assert str(path) in str(caught.value)  # every message names the file
    return caught.value


def test_zero_body_frames(tmp_path):
    counts = [0, 1, 0, 0, 2, 1, 0]
    path = _write(tmp_path, _lines(counts))
    record = parse_skeleton(path)
    np.testing.assert_array_equal(record.bodies_per_frame, counts)
    np.testing.assert_array_equal(record.frame, [1, 4, 4, 5])
    _assert_matches_plain_reading(record, path.read_bytes())
    assert parse_skeleton(_write(tmp_path, ["3", "0", "0", "0"])).num_rows == 0
    assert parse_skeleton(_write(tmp_path, ["0"])).num_frames == 0


@pytest.mark.parametrize(
    "newline, final, tail",
    [("\r\n", True, ""), ("\n", False, ""), ("\r\n", False, ""), ("\n", True, "\n  \n\t\r\n\n")],
    ids=["crlf", "no-final-newline", "crlf-no-final-newline", "trailing-blank-lines"],
)
def test_line_ends_and_trailing_blanks(tmp_path, newline, final, tail):
    lines = _lines([1, 2, 0, 1])
    want = parse_skeleton(_write(tmp_path, lines, name="lf.skeleton"))
    path = _write(tmp_path, lines, newline, final)
    path.write_bytes(path.read_bytes() + tail.encode())
    got = parse_skeleton(path)
    for name in ("bodies_per_frame", "frame", "body_id", "body_info", "joints"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_numbers_in_every_form_are_read_as_float_reads_them(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.normal(size=600) * 10.0 ** rng.integers(-30, 30, size=600)
    forms = [lambda v: repr(float(v)), "{:.7g}".format, "{:.3e}".format, "{:.15f}".format, "{:.17g}".format,
             "{:+.4E}".format]
    tokens = [forms[i % len(forms)](v) for i, v in enumerate(values)]
    tokens += ["-0", "0.", ".5", "-.25", "+3", "007.50", "1e+22", "1e-300", "4.9e-324", "123456789012345",
               "1234567890123456789012", "0.000000000000000000000000123", "9007199254740993", "2.5E-05"]
    tokens += ["0"] * (-len(tokens) % 12)
    lines = _lines([1] * (len(tokens) // (12 * NUM_JOINTS) + 1))
    joint_lines = [i for i, line in enumerate(lines) if len(line.split()) == 12]
    for k in range(0, len(tokens), 12):
        lines[joint_lines[k // 12]] = " ".join(tokens[k : k + 12])
    path = _write(tmp_path, lines)
    _assert_matches_plain_reading(parse_skeleton(path), path.read_bytes())


def test_body_id_is_an_exact_unsigned_64_bit_integer(tmp_path):
    lines = _lines([1])
    for body_id in (0, 2**53 + 1, 2**64 - 1):
        lines[2] = f"{body_id} " + lines[2].split(" ", 1)[1]
        assert parse_skeleton(_write(tmp_path, lines)).body_id.tolist() == [body_id]
    lines[2] = f"{2**64} " + lines[2].split(" ", 1)[1]
    err = _error(_write(tmp_path, lines))
    assert err.line == 3 and err.found == repr(str(2**64)) and "bodyID" in err.expected


@pytest.mark.parametrize(
    "keep, expected",
    [(2, "a body line"), (3, "a joint-count line"), (4, "a joint line"), (4 + 17, "a joint line"),
     (1 + 1 + 27, "a body line"), (1 + 1 + 27 + 27, "a body-count line")],
    ids=["body-line", "joint-count", "first-joint", "18th-joint", "second-body", "next-frame"],
)
def test_a_file_that_ends_early(tmp_path, keep, expected):
    lines = _lines([2, 1])
    for final in (True, False):
        err = _error(_write(tmp_path, lines[:keep], final=final))
        assert (err.line, err.expected, err.found) == (keep + 1, expected, "the end of the file")
    # blank lines after the cut do not change the line that was missing
    path = _write(tmp_path, lines[:keep] + ["", "  "])
    assert _error(path).line == keep + 1


def test_a_line_cut_short_at_the_end_of_the_file(tmp_path):
    lines = _lines([1])
    lines[-1] = " ".join(lines[-1].split()[:5])
    err = _error(_write(tmp_path, lines, final=False))
    assert (err.line, err.expected, err.found) == (len(lines), "12 fields in a joint line", "5 fields")


@pytest.mark.parametrize(
    "line, edit, expected, found",
    [
        (3, lambda s: s + " 7", "10 fields in a body line", "11 fields"),
        (3, lambda s: s.rsplit(" ", 1)[0], "10 fields in a body line", "9 fields"),
        (9, lambda s: s + " 0.5", "12 fields in a joint line", "13 fields"),
        (9, lambda s: s.split(" ", 1)[1], "12 fields in a joint line", "11 fields"),
        (9, lambda s: "", "12 fields in a joint line", "an empty line"),
        (4, lambda s: "25 25", "1 field in a joint-count line", "2 fields"),
        (2, lambda s: "", "1 field in a body-count line", "an empty line"),
    ],
)
def test_wrong_number_of_fields(tmp_path, line, edit, expected, found):
    lines = _lines([1, 1])
    lines[line - 1] = edit(lines[line - 1])
    err = _error(_write(tmp_path, lines))
    assert (err.line, err.expected, err.found) == (line, expected, found)


@pytest.mark.parametrize("token", ["abc", "1.2.3", "nan", "inf", "-inf", "--1", "1e", "1e+", "0x10", "1,5",
                                   ".", "-", "1_000", "١"])
def test_a_token_that_is_not_a_number(tmp_path, token):
    lines = _lines([1, 1])
    fields = lines[10].split()
    fields[4] = token  # depthY of the 7th joint line of frame 0
    lines[10] = " ".join(fields)
    err = _error(_write(tmp_path, lines))
    assert err.line == 11
    assert err.expected == "a number for depthY (field 5 of a joint line)"
    assert err.found == repr(token)


def test_a_token_that_is_not_a_number_in_a_body_line(tmp_path):
    lines = _lines([1])
    lines[2] = " ".join([*lines[2].split()[:-1], "two"])
    err = _error(_write(tmp_path, lines))
    assert (err.line, err.expected, err.found) == (3, "a number for trackingState (field 10 of a body line)",
                                                  "'two'")


@pytest.mark.parametrize("count", ["24", "26", "0"])
def test_wrong_joint_count(tmp_path, count):
    lines = _lines([1])
    lines[3] = count
    err = _error(_write(tmp_path, lines))
    assert (err.line, err.expected, err.found) == (4, "joint count 25", count)


def test_trailing_data(tmp_path):
    lines = _lines([1, 0])
    err = _error(_write(tmp_path, lines + ["", "1"]))
    assert (err.line, err.found) == (len(lines) + 2, "more data: '1'")
    assert err.expected == "the end of the file after its 2 frames"
    # a frame count one too low leaves a whole frame behind
    lines[0] = "1"
    assert _error(_write(tmp_path, lines)).line == len(lines)


@pytest.mark.parametrize("text", ["", "\n", " \r\n\n\t"])
def test_empty_file(tmp_path, text):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(text)
    err = _error(path)
    assert (err.line, err.expected, err.found) == (1, "the frame count", "an empty file")


@pytest.mark.parametrize("first, found", [("-3", "'-3'"), ("2.0", "'2.0'"), ("1e2", "'1e2'"), ("x", "'x'")])
def test_frame_count_must_be_a_non_negative_integer(tmp_path, first, found):
    err = _error(_write(tmp_path, [first, "0", "0"]))
    assert (err.line, err.expected, err.found) == (1, "a non-negative integer frame count", found)
    err = _error(_write(tmp_path, ["2", "0", first]))
    assert (err.line, err.expected, err.found) == (3, "a non-negative integer body count", found)


def test_a_frame_count_far_beyond_the_file(tmp_path):
    err = _error(_write(tmp_path, ["99999999999999999999", "0"]))
    assert (err.line, err.found) == (3, "the end of the file")


def test_bytes_api_and_its_source_label():
    lines = _lines([1])
    record = parse_skeleton_bytes(bytearray("\n".join(lines).encode()), "in-memory")
    assert record.source == "in-memory" and record.num_rows == 1
    with pytest.raises(SkeletonFormatError, match="^in-memory:4: expected joint count 25"):
        parse_skeleton_bytes("\n".join([*lines[:3], "7", *lines[4:]]).encode(), "in-memory")


# --- differential fuzzing against a strict plain reading ------------------------------------------

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_COUNT = re.compile(r"\d+")


class _Rejected(Exception):
    def __init__(self, line: int):
        self.line = line


def _strict_read(data: bytes) -> list[list[tuple[list[str], list[list[str]]]]]:
    """`_plain_read` with the format's rules: the first line that breaks one is `_Rejected`."""
    lines = data.split(b"\n")
    number = 0

    def take(fields):
        nonlocal number
        number += 1
        if not b"".join(lines[number - 1 :]).split():
            raise _Rejected(number)  # the end of the file
        tokens = [t.decode("latin-1") for t in lines[number - 1].split()]  # bytes: on b" \t\r\v\f"
        if len(tokens) != fields:
            raise _Rejected(number)
        return tokens

    def count():
        token = take(1)[0]
        if not _COUNT.fullmatch(token):
            raise _Rejected(number)
        return int(token)

    def numbers(tokens):
        for t in tokens:
            if not _NUMBER.fullmatch(t) or abs(float(t)) >= 3.4028235677973366e38:  # float32 inf
                raise _Rejected(number)
        return tokens

    frames = []
    for _ in range(count()):
        bodies = []
        for _ in range(count()):
            info = take(10)
            if not _COUNT.fullmatch(info[0]) or int(info[0]) >= 2**64:
                raise _Rejected(number)
            numbers(info[1:])
            if count() != NUM_JOINTS:
                raise _Rejected(number)
            bodies.append((info, [numbers(take(12)) for _ in range(NUM_JOINTS)]))
        frames.append(bodies)
    if b"".join(lines[number:]).split():
        raise _Rejected(number + next(i for i, line in enumerate(lines[number:]) if line.split()) + 1)
    return frames


def test_random_edits_are_accepted_or_rejected_as_a_strict_plain_reading_says():
    rng = np.random.default_rng(7)
    base = "\n".join(_lines([1, 0, 2], seed=3)).encode() + b"\n"
    alphabet = b"0123456789 .-+eE\n\r\txa"
    for trial in range(300):
        data = bytearray(base)
        for _ in range(rng.integers(1, 4)):
            if not data:
                break
            at = int(rng.integers(0, len(data)))
            edit = rng.integers(0, 3)
            if edit == 0:
                data[at] = alphabet[rng.integers(0, len(alphabet))]
            elif edit == 1:
                del data[at]
            else:
                data = data[:at]
        data = bytes(data)
        try:
            want = _strict_read(data)
        except _Rejected as rejected:
            with pytest.raises(SkeletonFormatError) as caught:
                parse_skeleton_bytes(data, "fuzz")
            assert caught.value.line == rejected.line, (trial, data)
        else:
            record = parse_skeleton_bytes(data, "fuzz")
            assert record.num_frames == len(want), (trial, data)
            _assert_matches_plain_reading(record, data, want)
