"""Text UTA (objective `text-uta`, paper section 4): a CLIP text tower trained from scratch by aligning its unmasked
token features with a frozen CLIP text tower's (the paper's: EVA-01-CLIP's), on captions alone.

The student is an open_clip model config (`model:`) whose image tower is the teacher's (checked by loading the
teacher's image tower into it, strictly) and whose text tower is trained: same joint width, context length and
tokenizer as the teacher's, any width / depth. Each step tokenises a caption with the teacher's tokenizer, keeps SOT,
EOT and the unmasked words (`masking.random_token_keep`), runs the student's text tower on the kept tokens only (each
with its own position embedding; `text_tower.py`) and scores the negative cosine between each and the teacher's token
at the same position, the teacher seeing the whole caption. Both sides are the towers' joint-space tokens (after
ln_final and text_projection), the text counterpart of the image students' objective.

The export is an open_clip state dict of the student config: the teacher's image tower and logit scale with the
trained text tower. It loads as `clip:<model>`, so zero-shot runs it as it runs any CLIP, and its numbers sit beside
the teacher's, whose image tower is the same.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict

import open_clip
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from utabench.backbones.base import Backbone
from utabench.backbones.factory import build_backbone
from utabench.backbones.openclip import OpenClipBackbone, check_clip_model
from utabench.core.checkpoint import load_strict
from utabench.core.distributed import DistInfo
from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write
from utabench.core.logs import quiet
from utabench.pretrain.objectives import OBJECTIVES
from utabench.pretrain.recipes import RECIPES
from utabench.pretrain.text_data import PretrainCaptions
from utabench.pretrain.text_tower import JointTextTokens
from utabench.pretrain.tokens import MemoTokenizer

# what the student's text tower must share with the teacher's, so that one tokenisation and one position serve both
SHARED_TEXT = ("context_length", "vocab_size", "hf_tokenizer_name", "tokenizer_kwargs")


def pack_kept(tokens: torch.Tensor, keep: torch.Tensor):
    """(ids, positions, filler) of the kept tokens packed to the left of each row, in their order, as long as the
    longest row's: `filler` (B, L) is True after a row's last kept token (what stands there is not scored)."""
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    positions = order[:, :int(keep.sum(1).max())]
    return tokens.gather(1, positions), positions, ~keep.gather(1, positions)


@RECIPES.register("text-distill", help="a CLIP text tower from scratch, aligned to a frozen CLIP text tower's tokens "
                  "(text-uta, paper section 4)")
class TextDistillRecipe:
    need_captions = True

    def __init__(self, cfg: Dict[str, Any], device: str = "cpu", dist: DistInfo | None = None,
                 teacher: Backbone | None = None):
        self.cfg, self.objective = cfg, OBJECTIVES.get(cfg["objective"])
        self.text_teacher = teacher or build_backbone(cfg["teacher"])
        key = self.text_teacher.spec.key
        if not isinstance(self.text_teacher, OpenClipBackbone):
            raise UtabenchError(f"teacher {key} cannot teach a text tower: text UTA takes an open_clip CLIP (a clip: "
                                "backbone) whose text tower teaches and whose image tower the student keeps")
        self.model_name = str(cfg["model"])
        check_clip_model(self.model_name)
        self._check_text(key)
        # the teacher's activation (OpenAI's releases use QuickGELU): its image tower computes as it did
        self.quick_gelu = any(isinstance(m, QuickGELU) for m in self.text_teacher.model.modules())
        with torch.random.fork_rng(devices=[]), quiet("", level=logging.ERROR):  # random init is the point
            torch.manual_seed(int(cfg["seed"]))
            self.clip = open_clip.create_model(self.model_name, pretrained=None, force_quick_gelu=self.quick_gelu)
        self._take_image_tower(key)
        self.clip.requires_grad_(False)
        self.module = JointTextTokens(self.clip, f"student {self.model_name}").requires_grad_(True)
        self.teacher_text = JointTextTokens(self.text_teacher.model, f"teacher {key}").to(device)
        tokenizer = MemoTokenizer(open_clip.get_tokenizer(self.text_teacher.spec.model))
        self.dataset = PretrainCaptions.from_config(cfg["data"], tokenizer, float(cfg["mask"]["ratio"]),
                                                    int(cfg["seed"]))

    def _check_text(self, key: str) -> None:
        ours = open_clip.get_model_config(self.model_name)
        theirs = open_clip.get_model_config(self.text_teacher.spec.model)
        differ = [f"{name} {ours['text_cfg'].get(name)} vs {theirs['text_cfg'].get(name)}" for name in SHARED_TEXT
                  if ours["text_cfg"].get(name) != theirs["text_cfg"].get(name)]
        if ours["embed_dim"] != theirs["embed_dim"]:
            differ.insert(0, f"embed_dim {ours['embed_dim']} vs {theirs['embed_dim']}")
        if differ:
            raise UtabenchError(f"student {self.model_name} and teacher {key} must share the joint space and the "
                                f"tokenizer: {'; '.join(differ)}")

    def _take_image_tower(self, key: str) -> None:
        """The teacher's image tower and logit scale (and bias) into the student model, which must have its shape."""
        try:
            load_strict(self.clip.visual, self.text_teacher.model.visual.state_dict(), f"teacher {key}'s image tower")
        except UtabenchError as exc:
            raise UtabenchError(f"student {self.model_name}: its image tower must be teacher {key}'s ({exc})") from None
        with torch.no_grad():
            for name in ("logit_scale", "logit_bias"):
                mine, theirs = getattr(self.clip, name, None), getattr(self.text_teacher.model, name, None)
                if mine is not None and theirs is not None:
                    mine.copy_(theirs)

    def loss(self, model: torch.nn.Module, batch: Dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        tokens = batch["tokens"].to(device, non_blocking=True)
        keep = batch["keep"].to(device, non_blocking=True)
        with torch.no_grad():
            target = self.teacher_text(tokens).float()
        ids, positions, filler = pack_kept(tokens, keep)
        return self.objective.loss(model(ids, positions), target, positions, filler)

    def export(self, out_dir: Path, steps: int) -> Dict[str, Any]:

        path = Path(out_dir) / "final.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in self.clip.state_dict().items()}
        meta = {"utabench": json.dumps({"objective": self.objective.name, "steps": steps})}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
        entry = {"spec": f"clip:{self.model_name}", "checkpoint": str(path)}
        if self.quick_gelu:
            entry["quick_gelu"] = True
        return {"backbone": entry,
                "objective": self.objective.name, "teacher": self.text_teacher.spec.to_dict()}
