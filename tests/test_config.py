"""Model configs: the shipped JSON files load; bad ones fail with one line naming file and key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bert4rec.errors import UserError
from bert4rec.models import load_config
from bert4rec.models.bert4rec import BERT4RecConfig

REPO = Path(__file__).resolve().parents[1]
GOOD = json.loads((REPO / "bert_train" / "bert_config_ml-1m_64.json").read_text())


@pytest.mark.parametrize("name,hidden,heads", [("64", 64, 2), ("64_d01", 64, 2), ("128", 128, 4), ("256", 256, 8)])
def test_shipped_configs_load(name, hidden, heads):
    cfg = load_config(REPO / "bert_train" / f"bert_config_ml-1m_{name}.json")
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size) == (hidden, heads, 3420)
    assert cfg.max_position_embeddings == 200 and cfg.intermediate_size == 4 * hidden


def test_64_d01_differs_from_the_original_64_only_in_dropout():
    d01 = json.loads((REPO / "bert_train" / "bert_config_ml-1m_64_d01.json").read_text())
    assert d01 == dict(GOOD, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    assert GOOD["hidden_dropout_prob"] == GOOD["attention_probs_dropout_prob"] == 0.2


def test_256_config_matches_the_issue():
    cfg = load_config(REPO / "bert_train" / "bert_config_ml-1m_256.json")
    assert cfg.hidden_dropout_prob == 0.5 and cfg.attention_probs_dropout_prob == 0.2


def write(tmp_path, raw) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


@pytest.mark.parametrize("raw,needle", [
    (dict(GOOD, hiden_size=3), "unknown key 'hiden_size'"),
    ({k: v for k, v in GOOD.items() if k != "hidden_size"}, "missing key 'hidden_size'"),
    (dict(GOOD, hidden_size=65), "hidden_size: 65 is not divisible"),
    (dict(GOOD, hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(GOOD, num_hidden_layers=0), "num_hidden_layers"),
    (dict(GOOD, hidden_act="swish"), "hidden_act"),
    (dict(GOOD, vocab_size="3420"), "vocab_size"),
    ("{\n  \"hidden_size\": 64,\n}", ":3: invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_configs_are_rejected_with_file_and_key(tmp_path, raw, needle):
    path = write(tmp_path, raw)
    with pytest.raises(UserError) as err:
        load_config(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_original_type_vocab_size_key_is_accepted():
    assert BERT4RecConfig.from_dict(dict(GOOD, type_vocab_size=2)).hidden_size == 64


def test_trainrec_reports_a_bad_config_in_one_line_with_exit_code_2(tmp_path):
    path = write(tmp_path, dict(GOOD, hiden_size=3))
    proc = subprocess.run([sys.executable, str(REPO / "trainrec.py"), f"--CONFIG_PATH={path}",
                           "--DATA_DIR", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "unknown key 'hiden_size'" in lines[0] and "Traceback" not in proc.stderr


def test_trainrec_rejects_unknown_flags_with_exit_code_2():
    proc = subprocess.run([sys.executable, str(REPO / "trainrec.py"), "--NOT_A_FLAG", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr and "Traceback" not in proc.stderr
