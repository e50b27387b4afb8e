"""`TrainOptions.check`: every option of `flaxsent train` is checked before any work or write;
a value no run can use (negative, zero where meaningless, nan, inf, out of a seed's range) is
one line and exit 2 on the command line."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from flaxsent.cli import main
from flaxsent.errors import TrainError
from flaxsent.train.recipe import SEED_LIMIT, TrainOptions

# flag, value, what the one line says
REFUSED = [
    ("--max-grad-norm", "-1", r"--max-grad-norm -1\.0: must be a finite positive number \(0 on "
                              r"the command line.*turns clipping off\)"),
    ("--max-grad-norm", "nan", "--max-grad-norm nan: must be a finite positive number"),
    ("--max-grad-norm", "inf", "--max-grad-norm inf: must be a finite positive number"),
    ("--learning-rate", "nan", "--learning-rate nan: must be a finite positive number"),
    ("--learning-rate", "inf", "--learning-rate inf: must be a finite positive number"),
    ("--learning-rate", "0", "--learning-rate 0.0: must be a finite positive number"),
    ("--learning-rate", "-1e-5", "--learning-rate -1e-05: must be a finite positive number"),
    ("--weight-decay", "nan", "--weight-decay nan: must be a finite number, 0 or more"),
    ("--weight-decay", "inf", "--weight-decay inf: must be a finite number, 0 or more"),
    ("--weight-decay", "-0.1", "--weight-decay -0.1: must be a finite number, 0 or more"),
    ("--warmup-steps", "-1", "--warmup-steps -1: must be an integer, 0 or more"),
    ("--batch-size", "0", "--batch-size 0: must be a positive integer"),
    ("--epochs", "-2", "--epochs -2: must be a positive integer"),
    ("--max-steps", "0", "--max-steps 0: must be a positive integer"),
    ("--grad-accum", "0", "--grad-accum 0: must be a positive integer"),
    ("--save-every", "0", "--save-every 0: must be a positive integer"),
    ("--max-length", "2", "--max-length 2: must be an integer, 3 or more"),
    ("--devices", "0", "--devices 0: must be a positive integer"),
    ("--num-labels", "1", "--num-labels 1: must be an integer, 2 or more"),
    ("--seed", "-1", "--seed -1: must be an integer from 0 to 4294967295"),
    ("--seed", str(SEED_LIMIT), "--seed 4294967296: must be an integer from 0 to 4294967295"),
    ("--label-names", "NEGATIVE,", "--label-names NEGATIVE,: give each label a distinct"),
    ("--label-names", "A,A", "--label-names A,A: give each label a distinct"),
]


@pytest.mark.parametrize(("flag", "value", "message"), REFUSED)
def test_an_unusable_option_is_one_line_before_any_read_or_write(capsys, tmp_path, flag, value,
                                                                 message):
    """Checked first: the model and data named do not even exist, and nothing is written."""
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["train", "--model", str(tmp_path / "no-model"), "--data",
                 str(tmp_path / "no-data.tsv"), "--out", str(out), "--no-progress",
                 f"{flag}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()


def test_zero_max_grad_norm_in_the_library_is_refused_naming_none():
    """optax would scale every gradient to 0 (no learning, exit 0): None is how to turn it off."""
    with pytest.raises(TrainError, match="None in TrainOptions"):
        TrainOptions(model="M", data="D", out="O", max_grad_norm=0.0).check()


@pytest.mark.parametrize("seed", [0, SEED_LIMIT - 1])
def test_every_seed_in_range_seeds_numpys_shuffle_and_jaxs_keys(seed):
    """The range's ends are usable by everything the seed feeds: numpy's data order (and a
    fresh head's initialisation) and JAX's dropout keys."""
    import jax
    TrainOptions(model="M", data="D", out="O", seed=seed).check()
    order = np.random.default_rng([seed, 0]).permutation(10)
    assert sorted(order) == list(range(10))
    key = jax.random.fold_in(jax.random.key(seed), 3)
    assert np.all(np.isfinite(jax.random.uniform(key, (2,))))


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_the_library_refuses_what_the_command_line_refuses(value):
    with pytest.raises(TrainError, match="--weight-decay"):
        TrainOptions(model="M", data="D", out="O", weight_decay=value).check()
