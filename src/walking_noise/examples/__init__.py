"""Example models beyond the paper's three, in the repository so that studies can name them
(``model: walking_noise.examples.vit:tiny_vit`` with ``model_kwargs``): a small vision transformer
(:mod:`walking_noise.examples.vit`) and a small residual CNN (:mod:`walking_noise.examples.resnet`), both sized to
train on MNIST in CPU minutes, both plain ``nn.Module``s whose operation points (``points: operations``) are found
without any change to them."""
