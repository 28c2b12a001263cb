"""Example models beyond the paper's three, in the repository so that studies can name them
(``model: walking_noise.examples.vit:tiny_vit`` with ``model_kwargs``; any ``nn.Module`` named
``package.module:callable`` works the same way): a small vision transformer (:mod:`walking_noise.examples.vit`), a
small residual CNN for operation points (:mod:`walking_noise.examples.resnet`) and one for the sensitivity example
(:mod:`walking_noise.examples.residual_cnn`), all sized to train on MNIST in CPU minutes, all plain ``nn.Module``s
whose operation points (``points: operations``) are found without any change to them."""
