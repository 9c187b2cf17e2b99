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


@pytest.mark.parametrize("name,hidden,heads,vocab", [("64", 64, 2, 3420), ("64_d01", 64, 2, "auto"),
                                                     ("128", 128, 4, 3420), ("256", 256, 8, 3420)])
def test_shipped_configs_load(name, hidden, heads, vocab):
    cfg = load_config(REPO / "bert_train" / f"bert_config_ml-1m_{name}.json")
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size) == (hidden, heads, vocab)
    assert cfg.max_position_embeddings == 200 and cfg.intermediate_size == 4 * hidden


def test_64_d01_differs_from_the_original_64_only_in_dropout():
    d01 = json.loads((REPO / "bert_train" / "bert_config_ml-1m_64_d01.json").read_text())
    assert d01 == dict(GOOD, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, vocab_size="auto")
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
    (dict(GOOD, hidden_act="mish"), "hidden_act"),
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


# ---------------------------------------------------------------------------------------------- models


def test_shipped_model_configs_name_their_model():
    from bert4rec.models.mostpop import MostPopConfig
    from bert4rec.models.sasrec import SASRecConfig

    sasrec = load_config(REPO / "bert_train" / "sasrec_config_ml-1m.json")
    assert isinstance(sasrec, SASRecConfig) and sasrec.vocab_size == "auto"
    assert (sasrec.hidden_size, sasrec.num_hidden_layers, sasrec.num_attention_heads) == (64, 2, 1)
    assert sasrec.max_position_embeddings == 200 and sasrec.loss == "ce"
    assert isinstance(load_config(REPO / "bert_train" / "mostpop_config.json"), MostPopConfig)
    assert isinstance(load_config(REPO / "bert_train" / "bert_config_ml-1m_64.json"), BERT4RecConfig)


def test_recbole_names_are_aliases(tmp_path):
    path = write(tmp_path, {"model": "SASRec", "n_layers": 3, "n_heads": 4, "inner_size": 128,
                            "attn_dropout_prob": 0.3, "loss_type": "CE", "hidden_size": 32})
    cfg = load_config(path)
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (3, 4, 128)
    assert cfg.attention_probs_dropout_prob == 0.3 and cfg.loss == "ce"


@pytest.mark.parametrize("raw,needle", [
    ({"model": "SASRec", "n_layers": 3, "num_hidden_layers": 2}, "another spelling of 'num_hidden_layers'"),
    ({"model": "GPT4Rec"}, "model must be one of"),
    ({"model": "SASRec", "loss": "mse"}, "loss: must be one of"),
    ({"model": "MostPop", "hidden_size": 64}, "unknown key 'hidden_size' for MostPop"),
    ({"model": "SASRec", "vocab_size": "many"}, "vocab_size"),
])
def test_bad_model_configs(tmp_path, raw, needle):
    path = write(tmp_path, raw)
    with pytest.raises(UserError) as err:
        load_config(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_config_that_is_not_utf8_or_nested_too_deep_is_one_line(tmp_path):
    latin = tmp_path / "latin.json"
    latin.write_bytes('{\n  "model": "SASRec", "note": "café"\n}'.encode("latin-1"))
    with pytest.raises(UserError, match=r"latin\.json:2: not UTF-8"):
        load_config(latin)
    deep = write(tmp_path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested too deeply"):
        load_config(deep)


def test_vocab_size_auto_resolves_and_a_number_must_match():
    cfg = BERT4RecConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=10)
    assert cfg.vocab_size == "auto" and cfg.with_vocab(64, "c.json", "vocab.txt").vocab_size == 64
    fixed = BERT4RecConfig(**{**cfg.__dict__, "vocab_size": 60})
    with pytest.raises(UserError, match="vocab_size is 60 but vocab.txt has 64 tokens"):
        fixed.with_vocab(64, "c.json", "vocab.txt")


def trainrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "trainrec.py"), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--MASKING", "fixed"], "'masking' is a key of BERT4Rec's config, not of SASRec's"),
    (["--SET", "num_blocks=2"], "'num_blocks' is not a key of SASRec's config (known: "),
    (["--SET", "hidden_dropout_prob"], "--SET 'hidden_dropout_prob': expected KEY=VALUE"),
    (["--SET", "hidden_dropout_prob=1.5"], "hidden_dropout_prob: must be a number in [0, 1), got 1.5"),
    (["--SET", "model=BERT4Rec"], "the model is chosen by the config file"),
])
def test_config_keys_set_on_the_command_line_are_checked_against_the_model(tmp_path, args, message):
    proc = trainrec("--CONFIG_PATH", str(REPO / "bert_train" / "sasrec_config_ml-1m.json"), *args,
                    "--DATA_DIR", str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_overrides_replace_the_files_keys_with_json_values_and_aliases(tmp_path):
    path = REPO / "bert_train" / "bert_config_ml-1m_64.json"
    cfg = load_config(path, {"mask_last_prob": 0.25, "n_layers": 3, "masking": "fixed"})
    assert (cfg.mask_last_prob, cfg.num_hidden_layers, cfg.masking) == (0.25, 3, "fixed")
    assert load_config(path) == load_config(path, {}) and load_config(path).mask_last_prob == 0.5
    from bert4rec.cli.train import build_parser, options_from_args

    args = build_parser().parse_args(["--CONFIG_PATH", str(path), "--SET", "hidden_dropout_prob=0.3",
                                      "--SET", "hidden_act=relu", "--MASK_LAST_PROB", "0.1"])
    assert options_from_args(args).config_overrides == {"hidden_dropout_prob": 0.3, "hidden_act": "relu",
                                                        "mask_last_prob": 0.1}
