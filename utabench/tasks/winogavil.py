"""WinoGAViL as DataComp scores it (mlfoundations/datacomp, eval_utils/wino_eval.py): per game, the CLIP prompt of
the cue (`clip_prompt`) and the candidate images are embedded and normalised; of `text @ images.T` the n highest
candidates are chosen (`np.argsort(logits)[-n:]`), n being the game's number of associations, and the game scores the
Jaccard index of the chosen candidates with its associations. The metrics are DataComp's averages of it over all games
and by number of candidates (`bootstrap.JACCARD_GROUPS`), in percent; DataComp's main metric is jaccard_score_10-12
(tasklist.yml). A game with an image skipped as corrupt (`--skip-corrupt`) is left out, and counted."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from utabench.core.errors import NotApplicable, UtabenchError
from utabench.core.registry import TASKS
from utabench.datasets.winogavil import CandidateImages, clip_prompt
from utabench.tasks.base import Task, TaskOutput
from utabench.tasks.bootstrap import jaccard_samples, point_metrics
from utabench.tasks.features import extract
from utabench.tasks.retrieval import encode_texts


def game_jaccard(logits: np.ndarray, truth: np.ndarray) -> float:
    """One game's score: the top `truth.sum()` candidates by `logits` chosen, |chosen ∩ truth| / |chosen ∪ truth|."""
    chosen = np.isin(np.arange(len(truth)), np.argsort(logits)[-int(truth.sum()):])
    return float((chosen & truth).sum() / (chosen | truth).sum())


@TASKS.register("winogavil", help="WinoGAViL cue-association games, DataComp's Jaccard scores (its misc/winogavil)")
class Winogavil(Task):
    name = "winogavil"
    cost = "evaluation"
    dataset_types = ("winogavil",)

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        if not backbone.zero_shot_ready:
            raise NotApplicable(f"{backbone.spec.key} has no joint image-text space with a text tower")
        images = CandidateImages(data, backbone.image_transform(), ctx.skip_corrupt)
        # the images are rows of the set, not files: decoded by PIL in the loader whatever --decode says
        feats = extract(backbone.encode_image, images, ctx if ctx.decode == "pil" else replace(ctx, decode="pil"),
                        f"{data.name} candidates")
        found = torch.zeros(len(images), dtype=torch.bool)
        found[feats.indices] = True
        image_emb = torch.zeros(len(images), feats.features.shape[1] if len(feats.indices) else 0)
        image_emb[feats.indices] = F.normalize(feats.features, dim=-1)
        starts = images.starts
        games = [g for g in range(len(data.cues)) if bool(found[starts[g]:starts[g + 1]].all())]
        if not games:
            raise UtabenchError(f"no game of {data.name} at {data.root} has all its candidate images readable")
        text_emb = F.normalize(encode_texts(backbone, [clip_prompt(data.cues[g]) for g in games], ctx), dim=-1)
        scores = [game_jaccard((text_emb[row] @ image_emb[starts[g]:starts[g + 1]].T).numpy(), data.truth(g))
                  for row, g in enumerate(games)]
        counts = [len(data.candidates[g]) for g in games]
        samples = jaccard_samples(np.array(scores), np.array(counts), np.array(games))
        return TaskOutput(metrics=point_metrics(samples), num_images=int(sum(counts)),
                          skipped_images=feats.skipped(len(images)), model_seconds=feats.seconds, samples=samples,
                          details={"num_games": len(games), "skipped_games": len(data.cues) - len(games),
                                   "prompt": "DataComp's: 'An {cue}' before a vowel, else 'A {cue}' (lower-cased)"})
