"""Stand-in backbone checkpoints for the ``--quick`` pipeline check.

The real rows of Table 4 start from the ImageNet students
(``runs/imagenet/<row>/student.params``, days of GPU training).  When they do
not exist, ``--quick`` uses this: a quarter-width Inception-BN trained for a
few SGD steps on CIFAR-10 images upscaled to 64 x 64, whose BatchNorm
running statistics (which the detector freezes) are then re-estimated on one
batch of real images with the final weights, saved in exactly the format of a classification run
(``net.save_parameters`` of ``symbols.get_model('inception_bn', classes=10,
width=0.25)``).  Each row gets its own seed, so the rows differ, but no
knowledge transfer happened: the quick table checks the pipeline, it says
nothing about KD, FitNet, AT or NST.
"""

import os

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

import symbols
from nst.errors import NSTError
from nst.io import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_quick_backbone(path, cifar_root, width=0.25, seed=0, steps=12, batch_size=32,
                        size=64, lr=0.05, mean=IMAGENET_MEAN, std=IMAGENET_STD, log=None):
    """Write a briefly trained Inception-BN classification checkpoint to ``path``.

    Returns ``path``; an existing file is kept.
    """
    if os.path.isfile(path):
        return path
    from train.data import load_cifar

    if log:
        log("writing a stand-in backbone (Inception-BN x%g, %d CIFAR-10 steps, seed %d) to %s"
            % (width, steps, seed, path))
    images, labels = load_cifar(cifar_root, "cifar10", "train")
    if len(images) < batch_size:
        raise NSTError("the CIFAR data at %s has %d training images, fewer than one batch of %d"
                       % (cifar_root, len(images), batch_size))
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    net = symbols.get_model("inception_bn", classes=10, width=width)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    trainer = gluon.Trainer(net.collect_params(), "nag",
                            {"learning_rate": lr, "momentum": 0.9, "wd": 1e-4})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    scale = mx.nd.array(np.asarray(std).reshape(1, 3, 1, 1) * 255.0)
    shift = mx.nd.array(np.asarray(mean).reshape(1, 3, 1, 1) * 255.0)

    def batch(n):
        pick = rng.choice(len(images), n, replace=False)
        x = mx.nd.array(images[pick].transpose(0, 3, 1, 2).astype(np.float32))
        x = mx.nd.contrib.BilinearResize2D(x, height=size, width=size)
        flip = rng.rand(n) < 0.5
        if flip.any():
            x = mx.nd.where(mx.nd.array(flip.astype(np.float32)).reshape((-1, 1, 1, 1))
                            .broadcast_like(x), x.flip(axis=3), x)
        return (x - shift) / scale, mx.nd.array(labels[pick])

    for _ in range(steps):
        x, y = batch(batch_size)
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch_size)
    # re-estimate the BatchNorm statistics with the final weights: momentum 0 makes the
    # running statistics those of one batch (MXNet updates them in the backward pass)
    norms = [b for b in _walk(net) if isinstance(b, gluon.nn.BatchNorm)]
    saved = [b._kwargs["momentum"] for b in norms]
    for b in norms:
        b._kwargs["momentum"] = 0.0
    x, y = batch(min(len(images), 2 * batch_size))
    with autograd.record():
        loss = loss_fn(net(x), y)
    loss.backward()
    for b, momentum in zip(norms, saved):
        b._kwargs["momentum"] = momentum
    with atomic_path(path) as tmp:
        net.save_parameters(tmp)
    return path


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)
