"""Training a lowered network with the paper's recipe (`alexnetc train/eval/predict/plot`).

One job per module: `config` (TrainConfig from recipe + flags), `data` (image folders, the
embedded digits, synthetic), `augment` (crops, flips, PCA colour noise, 10-crop), `optim`
(the paper's update rule and ε schedule), `checkpoint` (atomic, validated), `metrics` (CSV,
TensorBoard), `model` (build_module, conv1 kernels), `run` (a run's state, fresh or resumed),
`loop` (train_one_epoch, evaluate, fit), `plots`, `predict`. Torch is imported only here,
never by the compiler or the CLI's check path.
"""
