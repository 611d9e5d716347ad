"""utabench: one harness to evaluate vision backbones (UTA, EVA-02, CLIP, your own) on the tasks of the UTA paper."""

from utabench.torchvision_shim import install as _install_torchvision_shim

_install_torchvision_shim()

__version__ = "0.1.0"
