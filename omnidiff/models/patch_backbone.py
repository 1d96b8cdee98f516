"""A linear patch embedding as the image encoder's backbone (``model.image_encoder.backbone: patch``).

Each cell of the code grid is one patch of ``image_size / grid`` pixels square, flattened and mapped
to ``channels`` by one linear layer (a strided convolution, `timm.layers.PatchEmbed`): the image
reader of Fuyu and of a ViT's first layer, with no nonlinearity between the pixels and the
transformer. Every colour is therefore a linear function of the features the transformer reads,
which a convolutional trunk trained from scratch does not promise (docs/ablations.md, section 10).
It costs one small matmul per image instead of a ResNet's stages.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchBackbone(nn.Module):
    """Pixels [M, 3, S, S] -> a one-element list holding the feature map [M, channels, grid, grid]."""

    def __init__(self, image_size: int, grid: int, channels: int):
        super().__init__()
        from timm.layers import PatchEmbed

        if grid < 1 or image_size % grid:
            raise ValueError(f"model.image_encoder.backbone 'patch' needs image_size ({image_size}) to be a "
                             f"multiple of the code grid ({grid}) so every code gets one whole patch")
        self.embed = PatchEmbed(img_size=image_size, patch_size=image_size // grid, in_chans=3,
                                embed_dim=channels, flatten=False)
        self.channels = channels

    def forward(self, pixels_M3SS: torch.Tensor) -> list[torch.Tensor]:
        return [self.embed(pixels_M3SS)]
