"""The trained head detector's home: the .tflite model and labels (shipped), the model card, and
the training code under models.training (never imported by the runtime)."""
