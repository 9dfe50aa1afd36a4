"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) through pycocoevalcap.

Both sides go through pycocoevalcap's PTB tokenizer first, as the COCO, DSTC7-AVSD and ScanQA
evaluators do. SPICE is never used: it downloads Stanford CoreNLP at run time. The PTB
tokenizer and METEOR are Java programs (Java 8+ must be on PATH); METEOR costs several
seconds of JVM start-up, so `meteor=False` skips it.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

from vlynx.errors import VlynxError

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def caption_scores(references: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                   meteor: bool = True) -> dict[str, float]:
    """Corpus-level caption metrics in [0, 1] (CIDEr can exceed 1).

    `references` maps an id to one or more reference strings, `predictions` maps the same ids
    to one generated string each. Returns {"BLEU-1", ..., "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    (METEOR left out when `meteor` is False).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if set(references) != set(predictions):
        raise ValueError("caption_scores needs the same ids on both sides; pair them first")
    if not references:
        raise VlynxError("no items to score")
    if shutil.which("java") is None:
        raise VlynxError("caption metrics need Java (pycocoevalcap's PTB tokenizer and METEOR); "
                         "install a JRE, e.g. `apt-get install -y openjdk-17-jre-headless`")
    # pycocoevalcap keys must be sortable consistently and its tokenizer joins lines by '\n'.
    keys = {item_id: index for index, item_id in enumerate(sorted(references))}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({keys[i]: [{"caption": r} for r in refs] for i, refs in references.items()})
    res = tokenizer.tokenize({keys[i]: [{"caption": predictions[i]}] for i in references})

    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"BLEU-{n}": float(value) for n, value in enumerate(bleu, start=1)})
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scores["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores
