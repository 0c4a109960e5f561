"""The one table of channel names and the one spelling of a channel: {name, args} as a mapping,
as YAML/JSON text or as a bare name; misspelt arguments refused with the accepted names."""

import pytest
import torch
from neuralmimo.channels import CHANNELS, ChannelSpec, Kronecker, make_channel


def test_every_spelling_parses_to_the_same_spec():
    want = ChannelSpec("kronecker", {"rho_rx": 0.7, "rho_tx": 0.3})
    for value in ({"name": "kronecker", "args": {"rho_rx": 0.7, "rho_tx": 0.3}},
                  "{name: kronecker, args: {rho_rx: 0.7, rho_tx: 0.3}}",
                  '{"name": "kronecker", "args": {"rho_rx": 0.7, "rho_tx": 0.3}}', want):
        assert ChannelSpec.parse(value) == want
    assert ChannelSpec.parse("iid") == ChannelSpec("iid", {}) == ChannelSpec.parse({"name": "iid"})
    assert ChannelSpec.parse(want.to_dict()) == want and str(want) == "kronecker(rho_rx=0.7, rho_tx=0.3)"


@pytest.mark.parametrize("value,why", [
    ("{name: kronecker, args: [1]}", "args must be a mapping"),
    ("{model: kronecker}", "keys 'name' and 'args'"),
    ("[kronecker]", "is a mapping"),
    ("{name: kronecker", "neither a model name nor"),
    ({"name": ""}, "non-empty string"),
])
def test_malformed_specs_are_refused(value, why):
    with pytest.raises(ValueError, match=why):
        ChannelSpec.parse(value)


def test_make_channel_refuses_unknown_names_and_misspelt_arguments():
    with pytest.raises(ValueError, match=r"unknown channel model 'rayleigh'; choose one of \['iid'"):
        make_channel("rayleigh", 4, 2)
    with pytest.raises(ValueError, match="channel 'kronecker' has no argument 'rho'; it accepts rho_rx, rho_tx"):
        make_channel({"name": "kronecker", "args": {"rho": 0.5}}, 4, 2)
    with pytest.raises(ValueError, match="umi-task channels are 32x8"):
        make_channel({"name": "umi-task", "args": {"task_id": 3, "generate": False}}, 4, 2)
    m = make_channel("{name: kronecker, args: {rho_rx: 0.5}}", 4, 2)
    assert isinstance(m, Kronecker) and m.rho_rx == 0.5 and (m.nr, m.nt) == (4, 2)


def test_every_model_builds_from_its_name_and_accepted_args_are_listed():
    for name, entry in CHANNELS.items():
        assert entry.accepted_args() == sorted(entry.accepted_args()) and entry.summary
        if name == "umi-task":
            assert {"task_id", "normalise", "ues_per_task", "seed"} <= set(entry.accepted_args())
            continue
        if name == "file":  # needs a file: tests/core/channels/qa_external.py
            assert entry.accepted_args() == ["mapping", "since_frame", "split"]
            continue
        if name == "anchored":  # needs a base channel: tests/core/channels/qa_anchored.py
            assert entry.accepted_args() == ["anchor", "base", "rho"]
            continue
        m = make_channel(name, 6, 3)
        assert m.sample(2, torch.Generator().manual_seed(0)).shape == (2, 6, 3)


def test_with_defaults_adds_only_accepted_unset_arguments():
    spec = ChannelSpec("deepsic-sed", {"seed": 3})
    assert spec.with_defaults(seed=9, rho_rx=0.1, sample_blocks=50).args == {"seed": 3, "sample_blocks": 50}
    assert ChannelSpec("time-varying").with_defaults(seed=9).args == {}
