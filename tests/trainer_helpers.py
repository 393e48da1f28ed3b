"""Tiny networks and a CIFAR-subset config shared by the tests that train through
the real trainer (a one-epoch ResNet-11 teacher, a 1/8-width student)."""

TEACHER = {"network": "preact_resnet11_cifar", "params": {"width": 0.25}}
STUDENT = {"network": "inception_bn_small", "params": {"width": 0.125}}


def base_config(root, out, **extra):
    """A 2-epoch run on 192 training / 64 test images; ``extra`` replaces keys."""
    cfg = {"name": "t", "out": str(out), "seed": 3, "epochs": 2,
           "data": {"dataset": "cifar10", "root": str(root), "batch_size": 32,
                    "train_limit": 192, "test_limit": 64, "test_batch_size": 64},
           "student": dict(STUDENT),
           "optimizer": {"lr": 0.05, "lr_steps": [1]},
           "train": {"log_interval": 2}}
    cfg.update(extra)
    return cfg


def save_random_teacher(path, seed=None):
    """Save a randomly initialised :data:`TEACHER` (its features are all a transfer
    loss needs) to ``path``; ``seed`` seeds MXNet's generator first."""
    import mxnet as mx
    import symbols

    if seed is not None:
        mx.random.seed(seed)
    net = symbols.get_model(TEACHER["network"], classes=10, **TEACHER["params"])
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(str(path))
    return str(path)
