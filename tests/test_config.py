import json

import pytest

from vaecore.settings.config import (
    ConfigError,
    ImageModelConfig,
    LossConfig,
    RunConfig,
    TrainConfig,
    parse_bandwidth,
)


@pytest.mark.parametrize("make, field", [
    (lambda: ImageModelConfig(kind="resnet"), "model must be one of mlp, conv"),
    (lambda: ImageModelConfig(latent_dim=0), "latent_dim must be > 0"),
    (lambda: ImageModelConfig(hidden_sizes=(64, -1)), "hidden_sizes"),
    (lambda: LossConfig(objective="wae"), "loss must be one of elbo, mmd"),
    (lambda: LossConfig(kernel="linear"), "mmd_kernel must be one of rbf, imq"),
    (lambda: LossConfig(estimator="mean"), "mmd_estimator must be one of unbiased, biased"),
    (lambda: LossConfig(bandwidth="-1"), "bandwidth scales must all be > 0"),
    (lambda: LossConfig(bandwidth="wide"), "'2d' or positive numbers"),
    (lambda: LossConfig(objective="mmd", alpha=0.0, lam=0.5), "alpha + lambda - 1"),
    (lambda: TrainConfig(batch_size=1), "batch_size must be >= 2"),
    (lambda: TrainConfig(lr=0), "lr must be > 0"),
    (lambda: TrainConfig(binarization="otsu"), "binarization must be one of dynamic, fixed"),
    (lambda: TrainConfig(dtype="float16"), "dtype must be one of float32, float64"),
    (lambda: RunConfig(backend="tf"), "backend must be one of jax, torch"),
])
def test_invalid_values_name_the_field(make, field):
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace("+", r"\+")):
        make()


def test_bandwidth_forms():
    assert parse_bandwidth("2d") == "2d"
    assert parse_bandwidth("1.5") == 1.5
    assert parse_bandwidth("0.5,1,2") == (0.5, 1.0, 2.0)
    assert parse_bandwidth([0.5, 2]) == (0.5, 2.0)


def test_config_json_round_trip(tmp_path):
    cfg = RunConfig(backend="jax", model=ImageModelConfig(kind="conv", hidden_sizes=(64,)),
                    loss=LossConfig(objective="mmd", bandwidth="0.5,2"), train=TrainConfig(epochs=3, max_steps=7))
    cfg.save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["bandwidth"] == [0.5, 2.0]
    assert RunConfig.load(tmp_path / "config.json") == cfg
