"""lmms-eval model plugin: run a V-LynX bundle on lmms-eval's video benchmarks (VideoMME, MVBench, MLVU).

lmms-eval is an optional extra and is imported only when lmms-eval itself asks for the class,
so importing this module never needs it. Registration goes through the entry-point group
`lmms_eval.models` (see docs/lmms-eval.md):

    [project.entry-points."lmms_eval.models"]
    vlynx = "vlynx.lmms_eval_plugin:manifest"

after which `lmms-eval --model vlynx --model_args bundle=DIR --tasks videomme` works.
"""
from __future__ import annotations

from typing import Any

MODEL_ID = "vlynx"
CLASS_PATH = "vlynx.lmms_eval_plugin.VLynxLMMs"


def manifest() -> Any:
    """The `ModelManifest` lmms-eval's registry loads from our entry point."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


def _cut_at_stop(text: str, until: Any) -> str:
    """`text` up to the first of lmms-eval's `until` stop strings."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text


def _build_class() -> type:
    from lmms_eval.api.model import lmms

    from vlynx.progress import log, progress

    class VLynxLMMs(lmms):
        """A V-LynX bundle as an lmms-eval "simple" model (visuals from `doc_to_visual`, text from the task).

        Model args: `bundle` (bundle directory, required unless `model` is given) and
        `batch_size` (requests per `generate` call). `model` takes any object with
        `generate(requests) -> list[str]` for programmatic use.
        """

        is_simple = True

        def __init__(self, bundle: str | None = None, batch_size: int | str = 1, model: Any = None,
                     **unused: Any) -> None:
            super().__init__()
            if unused:
                log.warning("vlynx lmms-eval plugin: ignoring model args %s", ", ".join(sorted(unused)))
            if model is None:
                if not bundle:
                    raise ValueError("vlynx needs --model_args bundle=PATH_TO_BUNDLE")
                from vlynx.bundle import VLynx

                model = VLynx.from_pretrained(bundle)
            self.vlynx = model
            self.batch_size_per_gpu = int(batch_size)

        def _request(self, context: str, doc_to_visual: Any, doc_id: int, task: str, split: str) -> dict[str, Any]:
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
            visuals = visuals if isinstance(visuals, list | tuple) else [visuals]
            videos = [v for v in visuals if isinstance(v, str)]
            if len(videos) != len(visuals) or len(videos) > 1:
                raise NotImplementedError(f"vlynx plugin runs tasks with one video file per question; task {task!r} "
                                          f"gives {[type(v).__name__ for v in visuals]}")
            if not videos:
                raise NotImplementedError(f"vlynx plugin needs a video per question; task {task!r} gives none")
            # Other modalities are left out: the bundle reads them from the video (e.g. its audio track).
            return {"video": videos[0], "question": context}

        def _run(self, prepared: list[tuple[dict[str, Any], dict[str, Any]]], desc: str) -> list[str]:
            answers: list[str] = []
            size = max(1, self.batch_size_per_gpu)
            batches = [prepared[i:i + size] for i in range(0, len(prepared), size)]
            for batch in progress(batches, desc=desc, total=len(batches), unit="batch"):
                outputs = self.vlynx.generate([request for request, _ in batch])
                for (request, gen_kwargs), output in zip(batch, outputs, strict=True):
                    answer = _cut_at_stop(str(output), (gen_kwargs or {}).get("until"))
                    self.cache_hook.add_partial("generate_until", (request["question"], gen_kwargs), answer)
                    answers.append(answer)
            return answers

        def generate_until(self, requests: list[Any]) -> list[str]:
            """Instance.args = (context, gen_kwargs, doc_to_visual, doc_id, task, split) -> one answer each."""
            prepared = []
            for instance in requests:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
                prepared.append((self._request(context, doc_to_visual, doc_id, task, split), gen_kwargs))
            return self._run(prepared, "vlynx generate")

        def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
            """Instance.args = (context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split); the
            first round is answered from `context` (later rounds are not supported by the bundle API)."""
            prepared = []
            for instance in requests:
                context, gen_kwargs, doc_to_visual, _doc_to_text, doc_id, task, split = instance.args
                prepared.append((self._request(context, doc_to_visual, doc_id, task, split), gen_kwargs))
            return self._run(prepared, "vlynx generate (multi-round)")

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            raise NotImplementedError("vlynx answers by generation only; use the generate_until variant of the "
                                      "task (VideoMME, MVBench and MLVU are generation tasks in lmms-eval)")

    VLynxLMMs.__module__ = __name__
    return VLynxLMMs


_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    # Built on first access, so `import vlynx.lmms_eval_plugin` works without lmms-eval.
    global _CLASS
    if name == "VLynxLMMs":
        if _CLASS is None:
            _CLASS = _build_class()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
