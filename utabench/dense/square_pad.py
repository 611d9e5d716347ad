"""`SquarePadDetDataPreprocessor`: mmdet's DetDataPreprocessor that pads every batch, in training and at test, to one
square size after normalisation (zeros, i.e. the mean colour), as detectron2's `square_pad` does for ViTDet and
EVA-02. The ViT then sees at test time the token grid it was fine-tuned on (64 x 64 at 1024 with patch 16): mmdet's
own `BatchFixedSizePad` pads training batches only, so test images would reach the backbone padded to a multiple of
32 only (e.g. 64 x 44), with position embeddings and global RoPE stretched to shapes training never used.
"""

from __future__ import annotations

from mmdet.models.data_preprocessors import BatchFixedSizePad, DetDataPreprocessor

from utabench.core.errors import UtabenchError


class SquarePadDetDataPreprocessor(DetDataPreprocessor):
    def __init__(self, square_size: int, **kwargs):
        super().__init__(**kwargs)
        self.square_size = int(square_size)
        size = (self.square_size, self.square_size)
        self.pad_train = BatchFixedSizePad(size, img_pad_value=0, pad_mask=True)
        self.pad_test = BatchFixedSizePad(size, img_pad_value=0, pad_mask=False)

    def forward(self, data: dict, training: bool = False) -> dict:
        out = super().forward(data, training)
        inputs, samples = (self.pad_train if training else self.pad_test)(out["inputs"], out["data_samples"])
        if tuple(inputs.shape[-2:]) != (self.square_size, self.square_size):
            raise UtabenchError(f"a batch of {tuple(inputs.shape[-2:])} pixels does not fit the square of "
                                f"{self.square_size}: the recipe's resize must keep images within square_size")
        return {"inputs": inputs, "data_samples": samples}
