"""Mask generators: exact counts, determinism, Block masking's centre bias and Block-R's uniformity (paper Fig. 3)."""

import numpy as np
import pytest

from utabench.core.errors import UtabenchError
from utabench.harness.cli import main
from utabench.pretrain.masking import MaskGenerator, MaskSpec, location_probability


@pytest.mark.parametrize("kind", ["block", "block-r", "random"])
@pytest.mark.parametrize("ratio", [0.3, 0.4, 0.5, 0.75])
def test_every_mask_has_the_exact_count(kind, ratio):
    generator = MaskGenerator((14, 14), MaskSpec(kind, ratio))
    rng = np.random.default_rng(0)
    counts = {int(generator(rng).sum()) for _ in range(200)}
    assert counts == {round(ratio * 196)}


def test_masks_are_a_function_of_the_seed():
    generator = MaskGenerator((16, 16), MaskSpec("block-r", 0.4))
    a = [generator(np.random.default_rng([3, i])) for i in range(20)]
    b = [generator(np.random.default_rng([3, i])) for i in range(20)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) > 15


def test_block_masks_favour_the_centre_and_block_r_is_uniform():
    block = location_probability(MaskGenerator((16, 16), MaskSpec("block", 0.5)), 5000)
    centre, border = block[6:10, 6:10].mean(), np.concatenate([block[0], block[-1], block[:, 0], block[:, -1]]).mean()
    assert centre > 3 * border
    assert block.max() / block.min() > 5
    reversed_ = location_probability(MaskGenerator((16, 16), MaskSpec("block-r", 0.5)), 5000)
    assert reversed_.max() / reversed_.min() <= 1.1
    assert abs(reversed_.mean() - 0.5) < 1e-9  # exactly half of every mask


def test_block_r_with_no_reversal_keeps_the_centre_bias():
    never = MaskGenerator((8, 8), MaskSpec("block-r", 0.5, min_block=4, reverse_prob=0.0))
    prob = location_probability(never, 2000)
    assert prob[3:5, 3:5].mean() > 1.5 * prob[0].mean()


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_outside_open_interval_is_refused(ratio):
    with pytest.raises(UtabenchError, match=r"mask ratio must be in \(0, 1\)"):
        MaskSpec("block-r", ratio)


def test_masks_command_writes_the_map_and_prints_max_min(tmp_path, capsys):
    out = tmp_path / "fig3.png"
    assert main(["masks", "--type", "block-r", "--ratio", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ratio = float(printed.split("max/min ")[1].split(";")[0])
    assert ratio <= 1.1 and out.stat().st_size > 0
    from PIL import Image

    assert Image.open(out).size == (16 * 24, 16 * 24)
    assert main(["masks", "--type", "block", "--ratio", "1.2", "--out", str(out)]) == 2
    assert "mask ratio must be in (0, 1)" in capsys.readouterr().err
