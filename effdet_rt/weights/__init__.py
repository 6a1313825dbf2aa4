"""Weights in other formats read into our networks: automl EfficientDet checkpoints, keras.applications
EfficientNet .h5, EfficientNet-Lite PyTorch state dicts. Above model/ and spec/ (it builds networks to fill), unlike
the archive format beside it."""
