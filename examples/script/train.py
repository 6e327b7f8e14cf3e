"""A training script of your own, run by examples/script-mode.yaml (spec.script).

Your loop, your model; kerasop_trainer.api keeps what the operator offers: progress in the
job's status, resume after a restart, and a versioned model a KerasModelService serves.
"""

import keras
import numpy as np

from kerasop_trainer import api

job = api.job()
data = job.spec.data
table = np.genfromtxt(api.data_root() / data.path, delimiter=",", names=True, dtype="float32")
columns = [c for c in table.dtype.names if c != data.label_column]
x = np.stack([table[c] for c in columns], axis=1)
y = table[data.label_column].astype("float32")
cut = int(len(x) * 0.8)


def build():
    inputs = keras.Input((x.shape[1],), name="features")
    normalize = keras.layers.Normalization(name="standardize")
    normalize.adapt(x[:cut])
    hidden = keras.layers.Dense(32, activation="relu")(normalize(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="output")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.003), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


model, initial_epoch = api.resume(build)  # this job's last checkpoint, or a new model
model.fit(
    x[:cut],
    y[:cut],
    validation_data=(x[cut:], y[cut:]),
    epochs=api.epochs(),
    initial_epoch=initial_epoch,
    batch_size=32,
    callbacks=[api.callback(initial_epoch)],  # checkpoint, then progress into status
    verbose=0,
)
metrics = model.evaluate(x[cut:], y[cut:], return_dict=True, verbose=0)
api.publish(model, metrics, class_names=["0", "1"], feature_names=columns)
