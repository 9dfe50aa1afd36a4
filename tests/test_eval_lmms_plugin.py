"""The lmms-eval plugin's interface, with minimal fake lmms_eval modules (lmms-eval is not installed)."""
from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass

import pytest


class FakeLmms:
    """What the plugin relies on from lmms_eval.api.model.lmms: task_dict and cache_hook set by the harness."""

    def __init__(self):
        self.task_dict = {}
        self.cached = []
        self.cache_hook = types.SimpleNamespace(add_partial=lambda *args: self.cached.append(args))


@dataclass
class FakeManifest:
    model_id: str
    simple_class_path: str | None = None


@dataclass
class Instance:
    args: tuple


class FakeBundle:
    def __init__(self):
        self.requests, self.calls = [], []

    def generate(self, requests, max_new_tokens=64):
        self.requests.extend(requests)
        self.calls.append((len(requests), max_new_tokens))
        return [f"B. because {r['question'][:3]}\nUSER: more" for r in requests]


def parse_args_string(text):
    """lmms_eval.utils.simple_parse_args_string for plain `k=v,k=v` strings."""
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)


@pytest.fixture
def plugin(monkeypatch):
    modules = {name: types.ModuleType(name) for name in (
        "lmms_eval", "lmms_eval.api", "lmms_eval.api.model", "lmms_eval.models", "lmms_eval.models.registry_v2",
        "lmms_eval.utils")}
    modules["lmms_eval.api.model"].lmms = FakeLmms
    modules["lmms_eval.utils"].simple_parse_args_string = parse_args_string
    modules["lmms_eval.models.registry_v2"].ModelManifest = FakeManifest
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "vlynx.lmms_eval_plugin", raising=False)
    yield importlib.import_module("vlynx.lmms_eval_plugin")
    sys.modules.pop("vlynx.lmms_eval_plugin", None)


def test_import_without_lmms_eval():
    sys.modules.pop("vlynx.lmms_eval_plugin", None)
    module = importlib.import_module("vlynx.lmms_eval_plugin")
    assert "lmms_eval" not in sys.modules
    with pytest.raises(ImportError):
        module.VLynxLMMs  # noqa: B018  (building the class needs lmms-eval)
    sys.modules.pop("vlynx.lmms_eval_plugin", None)


def test_manifest_and_class_path(plugin):
    manifest = plugin.manifest()
    assert manifest.model_id == "vlynx"
    module_name, class_name = manifest.simple_class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(cls, FakeLmms) and cls.is_simple is True


def test_generate_until_and_multi_round(plugin):
    bundle = FakeBundle()
    model = plugin.VLynxLMMs(model=bundle, batch_size=2)
    docs = [{"video": "/data/a.mp4"}, {"video": "/data/b.mp4"}, {"video": "/data/c.mp4"}]
    model.task_dict = {"videomme": {"test": docs}}

    def to_visual(doc):
        return [doc["video"]]

    requests = [Instance(args=(f"Q{i}? Answer with the letter.", {"until": ["\nUSER:"]}, to_visual, i, "videomme",
                               "test")) for i in range(3)]
    answers = model.generate_until(requests)
    assert answers == ["B. because Q0?", "B. because Q1?", "B. because Q2?"]  # cut at the stop string
    assert [r["video"] for r in bundle.requests] == ["/data/a.mp4", "/data/b.mp4", "/data/c.mp4"]
    assert bundle.requests[0]["question"] == "Q0? Answer with the letter." and set(bundle.requests[0]) == {"video", "question"}
    assert len(model.cached) == 3

    multi = [Instance(args=("R0?", {}, to_visual, lambda doc, round_idx: "", 1, "videomme", "test"))]
    assert model.generate_until_multi_round(multi) == ["B. because R0?\nUSER: more"]
    assert bundle.requests[-1]["video"] == "/data/b.mp4"


def test_loglikelihood_and_bad_visuals(plugin):
    model = plugin.VLynxLMMs(model=FakeBundle())
    with pytest.raises(NotImplementedError, match="generation only"):
        model.loglikelihood([])
    model.task_dict = {"img": {"test": [{"x": 1}]}}
    with pytest.raises(NotImplementedError, match="one video file"):
        model.generate_until([Instance(args=("Q", {}, lambda doc: [object()], 0, "img", "test"))])
    with pytest.raises(ValueError, match="bundle="):
        plugin.VLynxLMMs()


def test_lmms_evals_own_batch_size_and_device_never_clash(plugin, monkeypatch):
    from vlynx.bundle import VLynx

    loaded = []
    monkeypatch.setattr(VLynx, "from_pretrained", lambda bundle, **options: loaded.append((bundle, options))
                        or FakeBundle())
    # lmms-eval always passes its --batch_size (and --device when given); the model args win.
    model = plugin.VLynxLMMs.create_from_arg_string(
        "bundle=/runs/b,batch_size=2,dtype=bfloat16", {"batch_size": "1", "max_batch_size": None, "device": "cuda:1"})
    assert model.batch_size_per_gpu == 2
    assert loaded == [("/runs/b", {"device": "cuda:1", "dtype": "bfloat16"})]
    model = plugin.VLynxLMMs.create_from_arg_string("bundle=/runs/b", {"batch_size": "4", "device": "cpu"})
    assert model.batch_size_per_gpu == 4 and loaded[-1][1]["device"] == "cpu"
    assert plugin.VLynxLMMs(model=FakeBundle(), batch_size="auto:8").batch_size_per_gpu == 1
    with pytest.raises(ValueError, match="positive integer"):
        plugin.VLynxLMMs(model=FakeBundle(), batch_size="0")


def test_max_new_tokens_from_the_task_else_the_model_args(plugin):
    bundle = FakeBundle()
    model = plugin.VLynxLMMs(model=bundle, batch_size=2, max_new_tokens=32)
    model.task_dict = {"mvbench": {"test": [{"video": f"/v{i}.mp4"} for i in range(5)]}}
    limits = [16, 16, 16, None, 16]  # the task's generation_kwargs; None: the model arg

    def to_visual(doc):
        return [doc["video"]]

    requests = [Instance(args=(f"Q{i}?", {"max_new_tokens": limit} if limit else {}, to_visual, i, "mvbench", "test"))
                for i, limit in enumerate(limits)]
    assert len(model.generate_until(requests)) == 5
    # Batches of at most 2 consecutive requests sharing one answer length, in request order.
    assert bundle.calls == [(2, 16), (1, 16), (1, 32), (1, 16)]
    assert [r["video"] for r in bundle.requests] == [f"/v{i}.mp4" for i in range(5)]
