"""Example models to try the library on (any ``nn.Module`` named ``package.module:callable`` works the same way)."""
