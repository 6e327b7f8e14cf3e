"""The keras-operator controller: kopf handlers over pure builders.

- ``training`` / ``serving``: pure functions, spec -> desired child manifests
  and observed children -> status (most unit tests live here);
- ``apply``: create-or-patch of children (read, compare, write only on change);
- ``controller``: the reconcile logic (reads the cluster, calls the builders);
- ``handlers``: the kopf handlers (when to reconcile);
- ``main``: the ``kerasop-operator`` entry point.

This package never imports TensorFlow or Keras.
"""

from kerasop import __version__

__all__ = ["__version__"]
