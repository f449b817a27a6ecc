"""Framework plugins against the real libraries: DSPy and Transformers (§7.7, §7.6).

These need the libraries, so they run in the ``plugins`` tox env
(``tox -e plugins``), which installs DSPy, Transformers and a CPU build of
torch; elsewhere they are skipped with the reason.  Nothing is downloaded: the
DSPy ``Prediction`` is built directly and the Transformers pipeline wraps a
tiny BERT made here from a config and a ten-word vocabulary file.  The pandas
plugin is tested in the default run (test_enhanced_serialize.py and
test_enhanced_wire.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from snakepit_bridge import CommandError
from snakepit_bridge.enhanced import EnhancedCommandHandler

from snakepit_harness.transports import StdioBridge

from .test_enhanced_wire import Host

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "good", "bad", "day"]
TINY_BERT = {
    "vocab_size": len(VOCAB),
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "max_position_embeddings": 32,
}


def _refused(handler: EnhancedCommandHandler, target: str, **args: Any) -> str:
    with pytest.raises(CommandError) as caught:
        handler.process_command("call", {"target": target, **args})
    assert caught.value.error_type == "forbidden"
    return str(caught.value)


def test_dspy_prediction_shape_and_flow() -> None:
    pytest.importorskip("dspy", reason="dspy not installed")
    handler = EnhancedCommandHandler()
    assert "dspy" in handler.process_command("ping", {})["frameworks_available"]
    out = handler.process_command(
        "pipeline",
        {
            "steps": [
                {
                    "target": "dspy.Example",
                    "kwargs": {"question": "Capital of France?", "answer": "Paris"},
                    "store_as": "example",
                },
                {"target": "stored.example.with_inputs", "args": ["question"], "store_as": "train"},
                {
                    "target": "dspy.Prediction",
                    "kwargs": {"answer": "stored.train.answer", "confidence": 0.9},
                    "store_as": "pred",
                },
                {"target": "stored.pred.get", "args": ["answer"]},
            ]
        },
    )
    assert out["steps_completed"] == 4
    example, _, pred, answer = out["pipeline_results"]
    assert example["result"]["attributes"]["answer"] == {"type": "str", "value": "Paris"}
    assert pred["result"]["type"] == "Prediction"
    assert pred["result"]["module"].startswith("dspy")
    assert pred["result"]["prediction_data"] == {
        "answer": {"type": "str", "value": "Paris"},
        "confidence": {"type": "float", "value": 0.9},
    }
    assert "Paris" in pred["result"]["string_repr"]
    assert answer["result"] == {"type": "str", "value": "Paris"}


@pytest.mark.parametrize(
    "target",
    [
        "dspy.load",
        "dspy.PythonInterpreter",
        "dspy.ProgramOfThought",
        "dspy.Module.load",
        "dspy.Embeddings.save",
        "dspy.settings.load",
    ],
)
def test_dspy_code_running_entry_points_are_refused(target: str) -> None:
    pytest.importorskip("dspy", reason="dspy not installed")
    assert "denylisted" in _refused(EnhancedCommandHandler(), target, args=["/tmp/x"])


def test_dspy_signature_cannot_import_side_effect_modules() -> None:
    pytest.importorskip("dspy", reason="dspy not installed")
    handler = EnhancedCommandHandler()
    with pytest.raises(CommandError) as caught:
        handler.process_command(
            "call", {"target": "dspy.Predict", "args": ["question: antigravity -> answer"]}
        )
    assert caught.value.error_type == "forbidden" and "antigravity" in str(caught.value)
    assert "antigravity" not in sys.modules


def test_dspy_flow_over_the_wire() -> None:
    pytest.importorskip("dspy", reason="dspy not installed")
    argv = [sys.executable, "-m", "snakepit_bridge.enhanced_bridge", "--protocol", "msgpack"]
    with StdioBridge(argv) as bridge:
        host = Host(bridge, "msgpack")
        out = host.ok(
            "pipeline",
            session_id="dspy-user",
            steps=[
                {"target": "dspy.Prediction", "kwargs": {"answer": "42"}, "store_as": "pred"},
                {"target": "json.dumps", "args": [{"answer": "stored.pred.answer"}]},
            ],
        )
        assert out["pipeline_results"][0]["result"]["prediction_data"] == {
            "answer": {"type": "str", "value": "42"}
        }
        assert out["pipeline_results"][1]["result"]["value"] == '{"answer": "42"}'
        retrieved = host.ok("retrieve", id="pred", session_id="dspy-user")["object"]
        assert retrieved["type"] == "Prediction"


def test_transformers_pipeline_from_a_tiny_local_model(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch not installed")
    pytest.importorskip("transformers", reason="transformers not installed")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    handler = EnhancedCommandHandler()
    assert "transformers" in handler.process_command("ping", {})["frameworks_available"]
    out = handler.process_command(
        "pipeline",
        {
            "steps": [
                {"target": "transformers.BertConfig", "kwargs": TINY_BERT, "store_as": "config"},
                {
                    "target": "transformers.BertForSequenceClassification",
                    "args": ["stored.config"],
                    "store_as": "model",
                },
                {
                    "target": "transformers.BertTokenizer",
                    "kwargs": {"vocab_file": str(vocab)},
                    "store_as": "tokenizer",
                },
                {
                    "target": "transformers.pipeline",
                    "args": ["text-classification"],
                    "kwargs": {"model": "stored.model", "tokenizer": "stored.tokenizer"},
                    "store_as": "classify",
                },
                {"target": "stored.classify", "args": ["hello good day"]},
            ]
        },
    )
    pipe = out["pipeline_results"][3]["result"]
    assert set(pipe) == {"type", "task", "model", "string_repr"}
    assert pipe["type"] == "TextClassificationPipeline" and pipe["task"] == "text-classification"
    assert pipe["model"] == "BertForSequenceClassification"  # no name or path: its class
    labels = out["pipeline_results"][4]["result"]
    assert labels["type"] == "list" and labels["length"] == 1
    first = labels["value"][0]["value"]
    assert first["label"]["value"] in ("LABEL_0", "LABEL_1")
    assert 0.0 <= first["score"]["value"] <= 1.0


def test_transformers_remote_code_and_helpers_are_refused() -> None:
    pytest.importorskip("transformers", reason="transformers not installed")
    handler = EnhancedCommandHandler()
    message = _refused(
        handler,
        "transformers.AutoModel.from_pretrained",
        args=["some/model"],
        kwargs={"trust_remote_code": True},
    )
    assert "unsafe_flag" in message
    assert "denylisted" in _refused(
        handler, "transformers.dynamic_module_utils.get_class_from_dynamic_module"
    )
    handler.process_command(
        "call", {"target": "transformers.BertConfig", "kwargs": TINY_BERT, "store_as": "config"}
    )
    assert "denylisted" in _refused(handler, "stored.config.save_pretrained", args=["/tmp/x"])
    assert "denylisted" in _refused(handler, "stored.config.push_to_hub", args=["x/y"])
