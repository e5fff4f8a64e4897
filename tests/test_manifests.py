"""The official facts: sample lists, missing lists, class names, protocol counts, sample names."""

from __future__ import annotations

import pytest

from ntu_pipeline.errors import SampleNameError
from ntu_pipeline.manifests import (
    all_samples,
    available_samples,
    class_names,
    get_protocol,
    missing_samples,
    protocol_counts,
)
from ntu_pipeline.sample_id import SampleId

# Train/test counts stated in the issue, from the NTU RGB+D papers' protocol definitions.
EXPECTED = {
    "xsub": ((40091, 16487), (40320, 16560)),
    "xview": ((37646, 18932), (37920, 18960)),
    "xsub120": ((63026, 50919), (63360, 51120)),
    "xset120": ((54468, 59477), (54720, 59760)),
}


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_protocol_counts_match_the_official_figures(protocol):
    without_missing, full = EXPECTED[protocol]
    assert protocol_counts(protocol, keep_missing=False) == without_missing
    assert protocol_counts(protocol, keep_missing=True) == full


def test_list_sizes_and_overlap():
    assert (len(available_samples("ntu60")), len(missing_samples("ntu60"))) == (56578, 302)
    assert (len(available_samples("ntu120")), len(missing_samples("ntu120"))) == (113945, 535)
    assert len(all_samples("ntu60")) == 56880 and len(all_samples("ntu120")) == 114480
    assert not missing_samples("ntu60") & set(available_samples("ntu60"))
    assert missing_samples("ntu60") <= missing_samples("ntu120")  # NTU120 extends NTU60


def test_class_names_in_label_order():
    assert len(class_names("ntu60")) == 60 and len(class_names("ntu120")) == 120
    assert class_names("ntu60")[0] == "drink water"
    assert class_names("ntu120")[:60] == class_names("ntu60")
    assert class_names("ntu60")[59] == "walking apart from each other"


def test_unknown_protocol_and_dataset_name_the_known_ones():
    with pytest.raises(ValueError, match="xsub"):
        get_protocol("xsubb")
    with pytest.raises(ValueError, match="ntu60"):
        available_samples("ntu61")


def test_sample_id_round_trip_and_label():
    sid = SampleId.parse("S017C003P020R002A054")
    assert (sid.setup, sid.camera, sid.performer, sid.replication, sid.action) == (17, 3, 20, 2, 54)
    assert sid.label == 53 and sid.name == "S017C003P020R002A054"
    assert SampleId.from_path("/x/S001C001P001R001A001_rgb.avi").name == "S001C001P001R001A001"


@pytest.mark.parametrize("name", ["S001C001P001R001A01", "s001C001P001R001A001", "S001C001P001R001A001x",
                                  "S000C001P001R001A001", "notes"])
def test_bad_sample_names_raise_naming_the_name(name):
    with pytest.raises(SampleNameError, match=name):
        SampleId.parse(name)
