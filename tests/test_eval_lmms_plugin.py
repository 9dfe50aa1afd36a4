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
        self.requests = []

    def generate(self, requests):
        self.requests.extend(requests)
        return [f"B. because {r['question'][:3]}\nUSER: more" for r in requests]


@pytest.fixture
def plugin(monkeypatch):
    modules = {name: types.ModuleType(name) for name in (
        "lmms_eval", "lmms_eval.api", "lmms_eval.api.model", "lmms_eval.models", "lmms_eval.models.registry_v2")}
    modules["lmms_eval.api.model"].lmms = FakeLmms
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
