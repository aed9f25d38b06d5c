"""Training and evaluation of the emotion model: dataset adapters, splits, the face-stage cache, augmentation, clip
sampling, metrics, the training loop (`train.run`) and evaluation (`evaluate.run`); settings in `config`. See README,
"Training and evaluation"."""
