"""Training, export and evaluation of the head detector (`make model`, `make eval-model`); needs
the [train] extra (TensorFlow), which the runtime never installs."""
