"""Transfer learning from keras.applications (VGG16 at 32x32: small and quick on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from trainerkit import Events, make_job

from kerasop.store import ModelStore
from kerasop_trainer.train import run


@pytest.mark.parametrize(
    "application,module,mode",
    [
        ("VGG16", "vgg16", "caffe"),
        ("ResNet50", "resnet50", "caffe"),
        ("MobileNetV2", "mobilenet_v2", "tf"),
    ],
)
def test_preprocessing_layers_match_keras_applications(application, module, mode):
    import keras

    from kerasop_trainer.model import application_preprocessing

    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, application_preprocessing(inputs, mode, application))
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-4)


def _predict_both(vdir, x):
    import keras
    import tensorflow as tf

    reloaded = keras.saving.load_model(vdir / "model.keras", safe_mode=True)
    saved = tf.saved_model.load(str(vdir))  # keep a reference while calling it
    served = np.asarray(saved.serve(tf.constant(x)))
    np.testing.assert_allclose(served, reloaded.predict(x, verbose=0), atol=1e-4)
    return reloaded


def test_vgg16_random_weights_grey_images(data_root, store):
    job = make_job(
        "vgg-none",
        {
            "format": "imageFolder",
            "path": "folder",
            "validationSplit": 0.2,
            "image": {"height": 32, "width": 32, "channels": 1},
        },
        {
            "transfer": {
                "application": "VGG16",
                "weights": "none",
                "head": [{"type": "Dense", "units": 8, "activation": "relu"}],
            }
        },
        {"epochs": 1, "batchSize": 16, "loss": "sparse_categorical_crossentropy"},
        output={"formats": ["savedmodel"]},  # _predict_both checks the SavedModel
    )
    done = run(job, data_root, store, "j", emit=Events())
    meta = ModelStore(store).metadata("vgg-none", done["modelVersion"]).to_json_dict()
    assert meta["input"]["image"] == {"height": 32, "width": 32, "channels": 1}
    assert meta["output"] == {
        "kind": "multiclass",
        "shape": [3],
        "classNames": ["circle", "square", "triangle"],
    }
    # the model takes raw 0..255 pixels: preprocessing is inside it
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    reloaded = _predict_both(store / "vgg-none" / "1", x)
    assert reloaded.output_shape == (None, 3)
    names = [layer.name for layer in reloaded.layers]
    assert "grey_to_rgb" in names and "vgg16_preprocess" in names


def test_vgg16_weights_from_file_frozen_except_fine_tuned_top(data_root, store, tmp_path):
    import keras

    keras.utils.set_random_seed(123)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights_dir = tmp_path / "data" / "weights"
    weights_dir.mkdir(parents=True)
    base.save_weights(weights_dir / "vgg16-notop.weights.h5")
    # the job reads data and weights from one data root
    (tmp_path / "data" / "shapes").symlink_to(data_root / "shapes", target_is_directory=True)

    job = make_job(
        "vgg-file",
        {"format": "imageCsv", "path": "shapes/data.csv", "image": {"height": 32, "width": 32}},
        {
            "transfer": {
                "application": "VGG16",
                "weights": "file",
                "weightsPath": "weights/vgg16-notop.weights.h5",
                "fineTuneLayers": 2,
                "pooling": "max",
            }
        },
        {"epochs": 1, "batchSize": 8, "seed": 7},
        output={"formats": ["savedmodel"]},  # _predict_both checks the SavedModel
    )
    done = run(job, tmp_path / "data", store, "j", emit=Events())
    assert done["modelVersion"] == 1
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    reloaded = _predict_both(store / "vgg-file" / "1", x)
    trained = reloaded.get_layer("vgg16")
    for name in ("block1_conv1", "block3_conv2", "block5_conv2"):  # frozen: as loaded
        for got, want in zip(
            trained.get_layer(name).get_weights(), base.get_layer(name).get_weights(), strict=False
        ):
            np.testing.assert_array_equal(got, want)
    # fineTuneLayers: 2 unfroze block5_conv3 (and block5_pool): it trained
    assert not np.array_equal(
        trained.get_layer("block5_conv3").get_weights()[0],
        base.get_layer("block5_conv3").get_weights()[0],
    )
    assert reloaded.output_shape == (None, 1)
