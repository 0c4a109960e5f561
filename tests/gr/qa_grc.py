"""GRC integration: every block YAML loads with GRC's own loader and instantiates the block;
every example compiles with grcc and grcc's output is free of errors."""

import py_compile
from pathlib import Path

import pytest
import yaml
from gnuradio import gr, neuralmimo
from gnuradio.grc.core.platform import Platform
from gnuradio.neuralmimo.apps.harness import compile_grc

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
BLOCK_YAML = sorted((ROOT / "grc").glob("*.block.yml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.grc"))
EXPECTED_BLOCKS = {"neuralmimo_mimo_frame_source", "neuralmimo_mimo_channel", "neuralmimo_ls_channel_estimator",
                   "neuralmimo_linear_detector", "neuralmimo_error_rate_probe", "neuralmimo_neural_detector",
                   "neuralmimo_rrc_pulse_shaper", "neuralmimo_rrc_matched_filter", "neuralmimo_radio_impairments",
                   "neuralmimo_frame_sync", "neuralmimo_frame_recorder", "neuralmimo_sigmf_source",
                   "neuralmimo_csi_logger", "neuralmimo_background_retrainer"}


@pytest.fixture(scope="module")
def platform():
    p = Platform(name="gr-neuralmimo QA", prefs=gr.prefs(), version=gr.version(),
                 version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()))
    p.build_library(path=[str(ROOT / "grc"), "/usr/share/gnuradio/grc/blocks"])
    return p


def test_every_block_has_a_yaml_in_the_category():
    ids = {yaml.safe_load(f.read_text())["id"] for f in BLOCK_YAML}
    assert ids == EXPECTED_BLOCKS
    for f in BLOCK_YAML:
        data = yaml.safe_load(f.read_text())
        assert data["category"] == "[Neural MIMO]" and data["documentation"].strip()
        assert data["file_format"] == 1


@pytest.mark.parametrize("path", BLOCK_YAML, ids=lambda p: p.name)
def test_yaml_loads_and_make_template_instantiates_the_block(platform, path):
    block_id = yaml.safe_load(path.read_text())["id"]
    assert block_id in platform.blocks, f"GRC did not load {path.name}"
    assert Path(platform.blocks[block_id].loaded_from).resolve() == path.resolve()
    fg = platform.make_flow_graph()
    blk = fg.new_block(block_id)
    blk.params["id"].set_value(f"{block_id}_0")
    fg.rewrite()
    fg.validate()
    errors = [e for e in blk.get_error_messages() if "not connected" not in e.lower()]
    assert not errors, errors
    code = blk.templates.render("make")
    instance = eval(code, {"neuralmimo": neuralmimo})  # the YAML's make line against the real constructor
    assert type(instance).__name__ == block_id.removeprefix("neuralmimo_")
    assert instance.to_basic_block().name() == type(instance).__name__
    for callback in blk.templates.get("callbacks", []):
        name = callback.split("(")[0].strip()
        assert callable(getattr(instance, name)), f"{path.name}: callback {name} missing"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles_with_grcc(tmp_path, path):
    generated, output = compile_grc(path, tmp_path, blocks_dir=ROOT / "grc")
    assert "Generating" in output
    py_compile.compile(str(generated), doraise=True)
    assert "neuralmimo." in generated.read_text()


def test_grcc_output_check_catches_a_broken_block_yaml(tmp_path):
    """grcc exits 0 when a block YAML fails to load: the checker must still fail."""
    broken = tmp_path / "blocks"
    broken.mkdir()
    for f in BLOCK_YAML:
        text = f.read_text()
        if "linear_detector" in f.name:
            text = text.replace("parameters:", "parameters: {oops", 1)
        (broken / f.name).write_text(text)
    with pytest.raises(RuntimeError):
        compile_grc(ROOT / "examples" / "loopback_linear.grc", tmp_path / "out", blocks_dir=broken)


def test_compile_refuses_a_flowgraph_whose_blocks_were_dropped(tmp_path):
    """Without the module's block folder grcc writes a flowgraph without its blocks and exits 0:
    the helper must fail and name the dropped blocks."""
    empty = tmp_path / "no-blocks"
    empty.mkdir()
    with pytest.raises(RuntimeError, match=r"grcc dropped blocks .*src \(neuralmimo_mimo_frame_source\)"):
        compile_grc(ROOT / "examples" / "loopback_linear.grc", tmp_path / "out", blocks_dir=empty)


def test_grcc_command_compiles_with_the_module_blocks(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "neuralmimo.lab.cli", "grcc", str(ROOT / "examples" / "loopback_neural.grc"),
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr
    generated = tmp_path / "loopback_neural.py"
    assert str(generated) in r.stdout and "self.det_nn = " in generated.read_text()
