"""lmms-eval model plugin: run a V-LynX bundle on lmms-eval's video benchmarks (VideoMME, MVBench, MLVU).

lmms-eval is an optional extra and is imported only when lmms-eval itself asks for the class,
so importing this module never needs it. Registration goes through the entry-point group
`lmms_eval.models` (see docs/lmms-eval.md):

    [project.entry-points."lmms_eval.models"]
    vlynx = "vlynx.lmms_eval_plugin:manifest"

after which `lmms-eval --model vlynx --model_args bundle=DIR --tasks videomme --batch_size 1` works.
lmms-eval passes its own `--batch_size` and `--device` to the model's constructor; the same
names in `--model_args` take precedence instead of clashing. A task's `max_new_tokens` (its
`generation_kwargs`, or `--gen_kwargs`) bounds each answer.
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


DEFAULT_MAX_NEW_TOKENS = 64  # when neither the task nor the model args say


def _batch_size(value: int | str) -> int:
    """lmms-eval's `batch_size` ("1", 4, "auto", "auto:4") as requests per `generate` call."""
    text = str(value).strip()
    if text.startswith("auto"):
        from vlynx.progress import log

        log.warning("vlynx lmms-eval plugin: batch_size %s is not supported, using 1", text)
        return 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"vlynx: batch_size must be a positive integer, got {value!r}")
    return int(text)


def _build_class() -> type:
    from lmms_eval.api.model import lmms

    from vlynx.progress import log, progress

    class VLynxLMMs(lmms):
        """A V-LynX bundle as an lmms-eval "simple" model (visuals from `doc_to_visual`, text from the task).

        Model args: `bundle` (bundle directory, required unless `model` is given), `dtype` (the
        weights' dtype, e.g. bfloat16) and `max_new_tokens` (the answer length when the task names
        none); from lmms-eval itself (or the model args, which take precedence): `batch_size`
        (requests per `generate` call), `device` (default: cuda when available) and
        `max_batch_size` (unused). `model` takes any object with `generate(requests,
        max_new_tokens) -> list[str]` for programmatic use.
        """

        is_simple = True

        @classmethod
        def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> Any:
            """lmms-eval's constructor call, with `--model_args` overriding its own `batch_size`/`device`
            (its default would otherwise pass the same keyword twice and fail)."""
            from lmms_eval.utils import simple_parse_args_string

            model_args = simple_parse_args_string(arg_string)
            harness = {k: v for k, v in (additional_config or {}).items() if v is not None}
            overridden = sorted(k for k in harness if k in model_args and str(harness[k]) != str(model_args[k]))
            if overridden:
                log.info("vlynx lmms-eval plugin: --model_args %s override lmms-eval's", ", ".join(overridden))
            return cls(**{**harness, **model_args})

        def __init__(self, bundle: str | None = None, batch_size: int | str = 1, device: str | None = None,
                     max_new_tokens: int | str = DEFAULT_MAX_NEW_TOKENS, dtype: str | None = None,
                     max_batch_size: int | str | None = None, model: Any = None, **unused: Any) -> None:
            super().__init__()
            if unused:
                log.warning("vlynx lmms-eval plugin: ignoring model args %s", ", ".join(sorted(unused)))
            if model is None:
                if not bundle:
                    raise ValueError("vlynx needs --model_args bundle=PATH_TO_BUNDLE")
                import torch

                from vlynx.bundle import VLynx

                device = device or ("cuda" if torch.cuda.is_available() else "cpu")
                model = VLynx.from_pretrained(bundle, device=device, dtype=dtype)
            self.vlynx = model
            self.batch_size_per_gpu = _batch_size(batch_size)
            self.max_new_tokens = int(max_new_tokens)

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
            batches = _batches(prepared, self.batch_size_per_gpu, self.max_new_tokens)
            if any((g or {}).get("do_sample") or float((g or {}).get("temperature") or 0) > 0 for _, g in prepared):
                log.warning("vlynx lmms-eval plugin: sampling settings ignored, the bundle decodes greedily")
            for max_new_tokens, batch in progress(batches, desc=desc, total=len(batches), unit="batch"):
                outputs = self.vlynx.generate([request for request, _ in batch], max_new_tokens=max_new_tokens)
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


def _batches(prepared: list[tuple[dict[str, Any], dict[str, Any]]], size: int,
             default_max_new_tokens: int) -> list[tuple[int, list[tuple[dict[str, Any], dict[str, Any]]]]]:
    """(max_new_tokens, up to `size` consecutive requests that share it), in request order: one
    `generate` call decodes a whole batch to one length."""
    batches: list[tuple[int, list[tuple[dict[str, Any], dict[str, Any]]]]] = []
    for item in prepared:
        limit = int((item[1] or {}).get("max_new_tokens") or default_max_new_tokens)
        if batches and batches[-1][0] == limit and len(batches[-1][1]) < size:
            batches[-1][1].append(item)
        else:
            batches.append((limit, [item]))
    return batches


_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    # Built on first access, so `import vlynx.lmms_eval_plugin` works without lmms-eval.
    global _CLASS
    if name == "VLynxLMMs":
        if _CLASS is None:
            _CLASS = _build_class()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
